//! The process's shared state: configuration, directories, and the models loaded so far, each
//! loaded once (announced while it loads, warmed up on a GPU) and shared by every role that uses
//! the same model, precision and device profile.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};

use super::config::{ConfigSet, ModelArch, ModelEntry, Role, WeightsLocation};
use crate::engine::events::{EngineEvent, EventSink, LogLevel};
use crate::model::config::{Arch, ModelConfig};
use crate::model::device::DeviceKind;
use crate::model::source::{local_model, parse_model_arg, ModelSource};
use crate::model::{load_model_reporting, LoadedModel};

/// Shared state of one process: configuration, directories, and loaded models (loaded once,
/// shared by every role that uses the same model, precision and device profile).
pub struct Workspace {
    pub config: ConfigSet,
    pub model_dir: PathBuf,
    pub data_dir: PathBuf,
    models: Mutex<HashMap<Role, LoadedModel>>,
    gpu_locks: Mutex<HashMap<DeviceKind, Arc<tokio::sync::Mutex<()>>>>,
}

impl Workspace {
    pub fn new(config: ConfigSet, model_dir: PathBuf, data_dir: PathBuf) -> Self {
        Workspace {
            config,
            model_dir,
            data_dir,
            models: Mutex::default(),
            gpu_locks: Mutex::default(),
        }
    }

    /// A registry id from models.yaml, or anything `parse_model_arg` understands.
    pub fn model_source(&self, name: &str) -> Result<ModelSource> {
        let Some(entry) = self.config.models.get(name) else {
            return parse_model_arg(name, &self.model_dir);
        };
        match entry.source.location() {
            WeightsLocation::Embedded { .. } => parse_model_arg("embedded", &self.model_dir),
            WeightsLocation::Hub { repo, revision } => Ok(ModelSource::Hub {
                repo: repo.to_string(),
                revision: revision.to_string(),
            }),
            WeightsLocation::Path(p) => {
                local_model(p).with_context(|| format!("models.yaml entry `{name}`: source path"))
            }
        }
    }

    /// Loads (or reuses) a model for a role.
    pub fn load(&self, role: &Role) -> Result<LoadedModel> {
        self.load_reporting(role, &EventSink::none())
    }

    /// Loads (or reuses) a model for a role, telling `sink` what it is doing while that takes
    /// time: reading the weights, then on a GPU warming the kernels up (see
    /// [`TappedModel::warm_up`](crate::model::transformer::TappedModel::warm_up)).
    pub fn load_reporting(&self, role: &Role, sink: &EventSink) -> Result<LoadedModel> {
        let mut models = self.models.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = models.get(role) {
            return Ok(m.clone());
        }
        let what = format!("{} ({}, {})", role.model, role.precision, role.device);
        let key = format!("load {what}");
        let preparing = |message: Option<String>| {
            sink.emit(EngineEvent::Preparing {
                key: key.clone(),
                message,
            })
        };
        preparing(Some(format!("loading {what}…")));
        let loaded = self.load_and_warm(role, &what, &preparing);
        preparing(None);
        let (m, report) = loaded?;
        sink.log(LogLevel::Info, report);
        models.insert(role.clone(), m.clone());
        Ok(m)
    }

    fn load_and_warm(
        &self,
        role: &Role,
        what: &str,
        preparing: &dyn Fn(Option<String>),
    ) -> Result<(LoadedModel, String)> {
        let started = Instant::now();
        let source = self.model_source(&role.model)?;
        let report = |message: String| preparing(Some(format!("loading {what}: {message}")));
        let mut m =
            load_model_reporting(&role.model, &source, role.precision, role.device, &report)
                .with_context(|| format!("loading {what}"))?;
        if let Some(entry) = self.config.models.get(&role.model) {
            check_declared_shape(&role.model, entry, &m.model.config)?;
            // `chat: false`: prompts are used as plain text even when the weights ship a
            // chat template.
            if !entry.chat {
                m.chat_template = None;
            }
        }
        let mut report = format!("{what} loaded in {:.1} s", started.elapsed().as_secs_f64());
        if role.device.is_gpu() {
            preparing(Some(format!(
                "preparing GPU kernels on {} for {} (the first use on a fresh machine compiles \
                 them: ≈15 s)…",
                role.device.device_name(),
                role.model
            )));
            let warming = Instant::now();
            m.model
                .warm_up()
                .with_context(|| format!("warming up {what}"))?;
            report.push_str(&format!(
                "; GPU kernels ready in {:.1} s",
                warming.elapsed().as_secs_f64()
            ));
        }
        Ok((m, report))
    }

    pub(super) fn gpu_lock(&self, kind: DeviceKind) -> Arc<tokio::sync::Mutex<()>> {
        self.gpu_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind)
            .or_default()
            .clone()
    }
}

/// models.yaml declares each model's architecture and shape, and experiments' layer lists are
/// checked against that declaration when the config loads: weights that disagree are refused
/// rather than checked at layers the declaration never promised.
fn check_declared_shape(id: &str, entry: &ModelEntry, actual: &ModelConfig) -> Result<()> {
    let arch_matches = match entry.arch {
        // Mistral's GGUF and config.json describe a Llama-shaped network.
        ModelArch::Llama | ModelArch::Mistral => actual.arch == Arch::Llama,
        ModelArch::Qwen2 => actual.arch == Arch::Qwen2,
    };
    let mut wrong = Vec::new();
    if !arch_matches {
        wrong.push(format!(
            "arch {:?}, but the weights are {:?}",
            entry.arch, actual.arch
        ));
    }
    if entry.layers != actual.n_layers {
        wrong.push(format!(
            "layers {}, but the weights have {}",
            entry.layers, actual.n_layers
        ));
    }
    if entry.hidden != actual.hidden {
        wrong.push(format!(
            "hidden {}, but the weights have {}",
            entry.hidden, actual.hidden
        ));
    }
    anyhow::ensure!(
        wrong.is_empty(),
        "models.yaml entry `{id}` declares {}: correct the entry",
        wrong.join("; ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_load_is_announced_once_and_then_reused() {
        let gguf = crate::testutil::embedded_gguf();
        let data = tempfile::tempdir().unwrap();
        let ws = Workspace::new(
            ConfigSet::builtin().unwrap(),
            gguf.parent().unwrap().to_path_buf(),
            data.path().to_path_buf(),
        );
        let role = Role {
            model: gguf.to_string_lossy().into_owned(),
            precision: crate::model::weights::Precision::Native,
            device: crate::model::device::DeviceProfile::CPU_F32,
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let sink = EventSink::new(tx);
        let first = ws.load_reporting(&role, &sink).unwrap();
        let second = ws.load_reporting(&role, &sink).unwrap();
        assert!(Arc::ptr_eq(&first.model, &second.model), "loaded once");
        drop(sink);
        let mut seen = Vec::new();
        while let Ok(event) = rx.try_recv() {
            seen.push(match event {
                EngineEvent::Preparing { message, .. } => format!("preparing {message:?}"),
                EngineEvent::Log { message, .. } => format!("log {message}"),
                other => format!("{other:?}"),
            });
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert!(seen[0].starts_with("preparing Some(\"loading "), "{seen:?}");
        assert!(seen[0].contains("(native, cpu:f32)"), "{seen:?}");
        assert_eq!(seen[1], "preparing None");
        assert!(seen[2].contains("loaded in"), "{seen:?}");
        // On the CPU there are no kernels to compile: no warm-up is announced.
        assert!(!seen.iter().any(|line| line.contains("GPU")), "{seen:?}");
    }

    #[test]
    fn weights_that_disagree_with_their_models_yaml_entry_are_refused() {
        let gguf = crate::testutil::embedded_gguf();
        let config_dir = tempfile::tempdir().unwrap();
        let entry = |id: &str, arch: &str, layers: usize| {
            format!(
                "  {id}:\n    description: the embedded GGUF by path\n    arch: {arch}\n    \
                 layers: {layers}\n    hidden: 576\n    source: {{path: {:?}}}\n",
                gguf.display()
            )
        };
        let yaml = format!(
            "models:\n{}{}",
            entry("declared-right", "llama", 30),
            entry("declared-wrong", "qwen2", 32)
        );
        std::fs::write(config_dir.path().join("models.yaml"), yaml).unwrap();
        let ws = Workspace::new(
            ConfigSet::load(Some(config_dir.path())).unwrap(),
            gguf.parent().unwrap().to_path_buf(),
            config_dir.path().to_path_buf(),
        );
        let role = |model: &str| Role {
            model: model.into(),
            precision: crate::model::weights::Precision::Native,
            device: crate::model::device::DeviceProfile::CPU_F32,
        };
        // Entries without `chat: true` prompt with plain text, template or not.
        assert!(ws
            .load(&role("declared-right"))
            .unwrap()
            .chat_template
            .is_none());
        assert!(ws
            .load(&role("smollm2-135m"))
            .unwrap()
            .chat_template
            .is_some());
        let Err(error) = ws.load(&role("declared-wrong")) else {
            panic!("weights of another shape loaded");
        };
        let error = format!("{error:#}");
        for part in [
            "`declared-wrong`",
            "arch Qwen2, but the weights are Llama",
            "layers 32, but the weights have 30",
        ] {
            assert!(error.contains(part), "{error}");
        }
        assert!(!error.contains("hidden"), "{error}");
    }

    #[test]
    fn a_failed_load_ends_its_announcement_and_names_the_role() {
        let data = tempfile::tempdir().unwrap();
        let ws = Workspace::new(
            ConfigSet::builtin().unwrap(),
            data.path().to_path_buf(),
            data.path().to_path_buf(),
        );
        let missing = data.path().join("missing.gguf");
        let role = Role {
            model: missing.to_string_lossy().into_owned(),
            precision: crate::model::weights::Precision::Full,
            device: crate::model::device::DeviceProfile::CPU_F32,
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let Err(error) = ws.load_reporting(&role, &EventSink::new(tx)) else {
            panic!("a missing file loaded");
        };
        assert!(format!("{error:#}").contains("missing.gguf"), "{error:#}");
        let mut last = None;
        while let Ok(event) = rx.try_recv() {
            last = Some(event);
        }
        assert!(
            matches!(last, Some(EngineEvent::Preparing { message: None, .. })),
            "{last:?}"
        );
    }
}
