//! The three configuration files (`models.yaml`, `experiments.yaml`, `prompts.yaml`): their
//! schema, where they are read from, and validation that points at the offending line.
//!
//! Resolution: an explicit directory (`--config-dir`, or `$VERILLM_CONFIG_DIR` read by the
//! caller) or else the per-user config directory; a file found there overrides the built-in
//! one (`models.yaml` entries are merged over the built-in models instead). Every file not
//! found falls back to the copy embedded in the binary, so the tool works from any directory.
//!
//! Every error names `file:line:column`, the key path, the bad value and what was expected.
//! Parse errors take their location from serde_yaml; semantic errors (unknown model, cutoff
//! out of range, …) find the key's line with [`locate_key`], a small scan of the YAML text.

mod aliases;
mod experiments;
mod locate;
mod models;
mod prompts;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use experiments::{
    is_matrix_scenario, ExperimentSpec, ExperimentsFile, GpuUse, InferenceConfig, LayerSelection,
    PlantSpec, PromptSelection, Role, VerificationMode, VerifierConfig, DEFAULT_CHALLENGED_LAYERS,
};
pub use locate::{locate_key, KeyPath, PathSegment};
pub use models::{GgufRef, ModelArch, ModelEntry, ModelRegistry, ModelSource, WeightsLocation};
pub use prompts::{
    ChatMessage, ChatRole, Prompt, PromptCategory, PromptCategoryConfig, PromptsFile,
};

/// Weight precision a role runs with (`full`, `q4_0`, …, `native`).
pub use crate::model::weights::Precision;

use experiments::validate_experiments;
use locate::{is_significant, locate_unknown_field};
use models::validate_models;
use prompts::validate_prompts;

/// A configuration file larger than this is refused before it is parsed.
const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Environment variable the caller reads to pass a config directory to [`ConfigSet::load`].
pub const CONFIG_DIR_ENV: &str = "VERILLM_CONFIG_DIR";

pub const MODELS_FILE: &str = "models.yaml";
pub const EXPERIMENTS_FILE: &str = "experiments.yaml";
pub const PROMPTS_FILE: &str = "prompts.yaml";

/// The built-in configs, compiled in so that the binary needs no files next to it.
const BUILTIN_MODELS: &str = include_str!("../../../configs/models.yaml");
const BUILTIN_EXPERIMENTS: &str = include_str!("../../../configs/experiments.yaml");
const BUILTIN_PROMPTS: &str = include_str!("../../../configs/prompts.yaml");

/// The per-user config directory (e.g. `~/.config/verillm-tui` on Linux), if the platform has one.
pub fn user_config_dir() -> Option<PathBuf> {
    directories::ProjectDirs::from("org", "verillm", "verillm-tui")
        .map(|dirs| dirs.config_dir().to_path_buf())
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Something wrong at a known place in a file.
    #[error("{}", format_located(file, *line, *column, key, message))]
    Invalid {
        /// The file as the user knows it: a path, or `configs/<name>` for a built-in file.
        file: String,
        /// 1-based; 0 when the place is unknown.
        line: usize,
        column: usize,
        /// Key path such as `experiments.exp3.verifiers[1].model`; empty when serde_yaml's
        /// message already names it, or for syntax errors.
        key: String,
        message: String,
    },
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config directory {} does not exist or is not a directory", path.display())]
    MissingDir { path: PathBuf },
}

fn format_located(file: &str, line: usize, column: usize, key: &str, message: &str) -> String {
    let place = if line == 0 {
        file.to_string()
    } else {
        format!("{file}:{line}:{column}")
    };
    if key.is_empty() {
        format!("{place}: {message}")
    } else {
        format!("{place}: {key}: {message}")
    }
}

impl ConfigError {
    /// The 1-based line the error points at (0 if none).
    pub fn line(&self) -> usize {
        match self {
            ConfigError::Invalid { line, .. } => *line,
            _ => 0,
        }
    }
}

/// One config file's text and the name errors use for it.
#[derive(Debug, Clone)]
struct SourceFile {
    label: String,
    text: String,
}

impl SourceFile {
    fn builtin(name: &str, text: &str) -> Self {
        SourceFile {
            label: format!("configs/{name}"),
            text: text.to_string(),
        }
    }

    fn read(path: &Path) -> Result<Self, ConfigError> {
        // A regular file (a FIFO would block, a device never end) of bounded size: the
        // built-in prompts, the largest, are 0.1 MB.
        let bytes = crate::util::read_regular_file(path, MAX_CONFIG_BYTES).map_err(|e| {
            ConfigError::Read {
                path: path.to_path_buf(),
                source: std::io::Error::other(format!("{e:#}")),
            }
        })?;
        let text = String::from_utf8(bytes).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        Ok(SourceFile {
            label: path.display().to_string(),
            text,
        })
    }

    /// Deserializes the whole file, turning serde_yaml's error into a located [`ConfigError`].
    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        expected_top_keys: &str,
    ) -> Result<T, ConfigError> {
        if !self.text.lines().any(is_significant) {
            return Err(ConfigError::Invalid {
                file: self.label.clone(),
                line: 1,
                column: 1,
                key: String::new(),
                message: format!("file is empty (expected {expected_top_keys})"),
            });
        }
        let screened = aliases::screen(&self.text).map(|finding| match finding {
            aliases::Finding::Alias(line, column) => (
                line,
                column,
                "YAML aliases (*name) are not accepted in configuration files, since a few \
                 aliases of a large anchored value expand a small file into gigabytes; write \
                 the values out"
                    .to_string(),
            ),
            aliases::Finding::DeepFlow(line, column) => (
                line,
                column,
                format!(
                    "[ ] or {{ }} collections nest deeper than {} here; no configuration needs \
                     that, and the YAML parser's time grows with the nesting",
                    aliases::MAX_FLOW_DEPTH
                ),
            ),
        });
        if let Some((line, column, message)) = screened {
            return Err(ConfigError::Invalid {
                file: self.label.clone(),
                line,
                column,
                key: String::new(),
                message,
            });
        }
        // Into a plain YAML value first, which refuses a key given twice in one mapping (a
        // typed map would keep the last silently: a second model `tiny` replacing the first).
        serde_yaml::from_str::<serde_yaml::Value>(&self.text)
            .map_err(|err| self.yaml_error(&err))?;
        serde_yaml::from_str(&self.text).map_err(|err| self.yaml_error(&err))
    }

    fn yaml_error(&self, err: &serde_yaml::Error) -> ConfigError {
        let (mut line, mut column) = err.location().map_or((0, 0), |l| (l.line(), l.column()));
        let mut message = err.to_string();
        // serde_yaml appends " at line L column C"; we print the place in front instead.
        let suffix = format!(" at line {line} column {column}");
        if let Some(pos) = message.find(&suffix) {
            message.replace_range(pos..pos + suffix.len(), "");
        }
        if let Some((field_line, field_column)) =
            locate_unknown_field(&self.text, &message, line, column)
        {
            (line, column) = (field_line, field_column);
        }
        ConfigError::Invalid {
            file: self.label.clone(),
            line,
            column,
            key: String::new(),
            message,
        }
    }

    /// A semantic error at `path`, located by scanning this file's text.
    fn error_at(&self, path: &KeyPath, message: impl Into<String>) -> ConfigError {
        let (line, column) = locate_key(&self.text, path).unwrap_or((0, 0));
        ConfigError::Invalid {
            file: self.label.clone(),
            line,
            column,
            key: path.to_string(),
            message: message.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// All configuration in effect, validated.
#[derive(Debug, Clone)]
pub struct ConfigSet {
    /// The directory whose files override the built-ins; None when only built-ins are used.
    pub dir: Option<PathBuf>,
    pub models: ModelRegistry,
    pub experiments: ExperimentsFile,
    pub prompts: PromptsFile,
    /// The files read, as errors name them (built-ins appear as `configs/<name>`).
    pub loaded_from: Vec<String>,
}

impl ConfigSet {
    /// Loads from `dir` if given (it must exist), else from the per-user config directory if it
    /// exists, else the built-in configs. Files missing from the directory fall back to the
    /// built-in ones; `models.yaml` entries are merged over the built-in models.
    pub fn load(dir: Option<&Path>) -> Result<ConfigSet, ConfigError> {
        match dir {
            Some(dir) if !dir.is_dir() => Err(ConfigError::MissingDir {
                path: dir.to_path_buf(),
            }),
            Some(dir) => Self::load_over_builtins(Some(dir)),
            None => {
                let user_dir = user_config_dir().filter(|d| d.is_dir());
                Self::load_over_builtins(user_dir.as_deref())
            }
        }
    }

    /// Only the configs compiled into the binary.
    pub fn builtin() -> Result<ConfigSet, ConfigError> {
        Self::load_over_builtins(None)
    }

    fn load_over_builtins(dir: Option<&Path>) -> Result<ConfigSet, ConfigError> {
        // Whatever stands at the name is the user's file: one that cannot be read as a config
        // (a FIFO, a folder) is an error, never silently replaced by the built-in.
        let override_file = |name: &str| -> Result<Option<SourceFile>, ConfigError> {
            // symlink_metadata: a dangling link is something standing there too.
            match dir
                .map(|d| d.join(name))
                .filter(|p| p.symlink_metadata().is_ok())
            {
                Some(path) => SourceFile::read(&path).map(Some),
                None => Ok(None),
            }
        };
        let mut loaded_from = Vec::new();

        let builtin_models_file = SourceFile::builtin(MODELS_FILE, BUILTIN_MODELS);
        let mut models: ModelRegistry = builtin_models_file.parse("a `models:` mapping")?;
        validate_models(&builtin_models_file, &models)?;
        loaded_from.push(builtin_models_file.label.clone());
        if let Some(user_models_file) = override_file(MODELS_FILE)? {
            let mut user_models: ModelRegistry = user_models_file.parse("a `models:` mapping")?;
            validate_models(&user_models_file, &user_models)?;
            // A relative `path:` means next to the file that names it, not wherever the
            // program happens to be started (or later runs: the folder is made absolute).
            if let Some(dir) = dir {
                let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
                for entry in user_models.models.values_mut() {
                    if let Some(path) = entry.source.path.as_mut().filter(|p| p.is_relative()) {
                        *path = dir.join(&*path);
                    }
                }
            }
            models.models.extend(user_models.models);
            loaded_from.push(user_models_file.label.clone());
        }

        let prompts_file = override_file(PROMPTS_FILE)?
            .unwrap_or_else(|| SourceFile::builtin(PROMPTS_FILE, BUILTIN_PROMPTS));
        let prompts: PromptsFile =
            prompts_file.parse("the categories `short:`, `medium:` and `long:`")?;
        validate_prompts(&prompts_file, &prompts)?;
        loaded_from.push(prompts_file.label.clone());

        let experiments_file = override_file(EXPERIMENTS_FILE)?
            .unwrap_or_else(|| SourceFile::builtin(EXPERIMENTS_FILE, BUILTIN_EXPERIMENTS));
        let experiments: ExperimentsFile = experiments_file.parse("an `experiments:` mapping")?;
        validate_experiments(&experiments_file, &experiments, &models, &prompts)?;
        loaded_from.push(experiments_file.label.clone());

        Ok(ConfigSet {
            dir: dir.map(Path::to_path_buf),
            models,
            experiments,
            prompts,
            loaded_from,
        })
    }
}
