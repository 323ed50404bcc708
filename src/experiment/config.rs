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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::experiment::results::TrialVerdict;
use crate::model::device::DeviceProfile;
use crate::stats::policy::PolicyConfig;

/// Environment variable the caller reads to pass a config directory to [`ConfigSet::load`].
pub const CONFIG_DIR_ENV: &str = "VERILLM_CONFIG_DIR";

pub const MODELS_FILE: &str = "models.yaml";
pub const EXPERIMENTS_FILE: &str = "experiments.yaml";
pub const PROMPTS_FILE: &str = "prompts.yaml";

/// The built-in configs, compiled in so that the binary needs no files next to it.
const BUILTIN_MODELS: &str = include_str!("../../configs/models.yaml");
const BUILTIN_EXPERIMENTS: &str = include_str!("../../configs/experiments.yaml");
const BUILTIN_PROMPTS: &str = include_str!("../../configs/prompts.yaml");

/// The experiments the built-in `experiments.yaml` defines, in presentation order.
pub fn experiment_names() -> &'static [&'static str] {
    &["exp1", "exp2", "exp3", "exp4", "exp5"]
}

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
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
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
// Key paths and the locator
// ---------------------------------------------------------------------------------------------

/// One step of a key path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSegment {
    Key(String),
    Index(usize),
}

/// A path into a YAML document, written `experiments.exp3.verifiers[1].model`. Kept as
/// segments because keys may contain dots (`qwen2.5-7b-instruct`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<PathSegment>);

impl KeyPath {
    pub fn root() -> Self {
        KeyPath(Vec::new())
    }

    pub fn key(&self, key: &str) -> Self {
        let mut next = self.clone();
        next.0.push(PathSegment::Key(key.to_string()));
        next
    }

    pub fn index(&self, index: usize) -> Self {
        let mut next = self.clone();
        next.0.push(PathSegment::Index(index));
        next
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                PathSegment::Key(key) if i == 0 => write!(f, "{key}")?,
                PathSegment::Key(key) => write!(f, ".{key}")?,
                PathSegment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A node's place while scanning: content that starts on the header line (`inline`, as
/// line index and byte column) and the following lines that belong to it (`body`).
#[derive(Debug, Clone)]
struct Scope {
    inline: Option<(usize, usize)>,
    body: std::ops::Range<usize>,
}

fn is_significant(line: &str) -> bool {
    let trimmed = line.trim();
    !trimmed.is_empty() && !trimmed.starts_with('#') && trimmed != "---" && trimmed != "..."
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_dash_item(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

/// Finds where `path` is written in `text` and returns the 1-based (line, column) of the
/// deepest segment found: the key of a mapping entry, the dash (or flow element) of a
/// sequence item. Handles block style and single-line flow collections (`{a: 1}`, `[1, 2]`),
/// which is all our config files use. None when not even the first segment is found.
pub fn locate_key(text: &str, path: &KeyPath) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut scope = Scope {
        inline: None,
        body: 0..lines.len(),
    };
    let mut found = None;
    for segment in &path.0 {
        let next = match segment {
            PathSegment::Key(key) => find_key(&lines, &scope, key),
            PathSegment::Index(index) => find_index(&lines, &scope, *index),
        };
        match next {
            Some((position, inner)) => {
                found = Some(position);
                scope = inner;
            }
            None => break,
        }
    }
    found.map(|(line, byte_col)| (line + 1, lines[line][..byte_col].chars().count() + 1))
}

/// The positions of a block node's direct children: the inline start plus every body line
/// at the same indentation as the first child.
fn child_positions(lines: &[&str], scope: &Scope) -> Vec<(usize, usize)> {
    let mut positions = Vec::new();
    let level = match scope.inline {
        Some(position) => {
            positions.push(position);
            position.1
        }
        None => match scope.body.clone().find(|&i| is_significant(lines[i])) {
            Some(first) => indent_of(lines[first]),
            None => return positions,
        },
    };
    for i in scope.body.clone() {
        if is_significant(lines[i]) && indent_of(lines[i]) == level {
            positions.push((i, level));
        }
    }
    positions
}

/// The body of a node that starts at column `column` of line `line`: following lines until
/// one is indented less (or equally, unless `allow_same_indent_items` and it is a `- ` item,
/// which YAML allows for a sequence under a mapping key).
fn body_after(
    lines: &[&str],
    line: usize,
    column: usize,
    limit: usize,
    allow_same_indent_items: bool,
) -> std::ops::Range<usize> {
    let mut end = line + 1;
    while end < limit {
        let text = lines[end];
        if is_significant(text) {
            let indent = indent_of(text);
            let same_level_item =
                allow_same_indent_items && indent == column && is_dash_item(text.trim_start());
            if indent < column || (indent == column && !same_level_item) {
                break;
            }
        }
        end += 1;
    }
    line + 1..end
}

/// Byte column of the first non-space character at or after `column`, unless the rest of the
/// line is empty or a comment.
fn content_start(line: &str, column: usize) -> Option<usize> {
    let rest = line.get(column..)?;
    let skipped = rest.len() - rest.trim_start().len();
    let trimmed = rest.trim_start();
    (!trimmed.is_empty() && !trimmed.starts_with('#')).then_some(column + skipped)
}

/// Length of `key` as written at the start of `text` (bare or quoted) when `text` is that
/// key followed by a colon.
fn key_written_at(text: &str, key: &str) -> Option<usize> {
    for (open, close) in [("", ""), ("\"", "\""), ("'", "'")] {
        let written = format!("{open}{key}{close}");
        if let Some(rest) = text.strip_prefix(&written) {
            let after_colon = rest.strip_prefix(':')?;
            if after_colon.is_empty() || after_colon.starts_with([' ', '\t']) {
                return Some(written.len());
            }
        }
    }
    None
}

fn find_key(lines: &[&str], scope: &Scope, key: &str) -> Option<((usize, usize), Scope)> {
    if let Some((line, column)) = scope.inline {
        if lines[line][column..].starts_with('{') {
            return find_in_flow(lines[line], column, FlowLookup::Key(key)).map(
                |(position, value)| {
                    (
                        (line, position),
                        Scope {
                            inline: Some((line, value)),
                            body: 0..0,
                        },
                    )
                },
            );
        }
    }
    for (line, column) in child_positions(lines, scope) {
        let Some(key_len) = key_written_at(&lines[line][column..], key) else {
            continue;
        };
        let value_column = column + key_len + 1;
        let inline = content_start(lines[line], value_column)
            .filter(|&start| !lines[line][start..].starts_with(['|', '>']))
            .map(|start| (line, start));
        let body = body_after(lines, line, column, scope.body.end.max(line + 1), true);
        return Some(((line, column), Scope { inline, body }));
    }
    None
}

fn find_index(lines: &[&str], scope: &Scope, index: usize) -> Option<((usize, usize), Scope)> {
    if let Some((line, column)) = scope.inline {
        if lines[line][column..].starts_with('[') {
            return find_in_flow(lines[line], column, FlowLookup::Index(index)).map(
                |(position, _)| {
                    (
                        (line, position),
                        Scope {
                            inline: Some((line, position)),
                            body: 0..0,
                        },
                    )
                },
            );
        }
    }
    let (line, column) = child_positions(lines, scope)
        .into_iter()
        .filter(|&(line, column)| is_dash_item(&lines[line][column..]))
        .nth(index)?;
    let inline = content_start(lines[line], column + 1).map(|start| (line, start));
    // Lines of an item are those indented past its dash.
    let body = body_after(lines, line, column + 1, scope.body.end.max(line + 1), false);
    Some(((line, column), Scope { inline, body }))
}

enum FlowLookup<'a> {
    Key(&'a str),
    Index(usize),
}

/// Looks inside a single-line flow collection starting at `open` (`{` or `[`). Returns the
/// byte column of the matching entry and of its value.
fn find_in_flow(line: &str, open: usize, lookup: FlowLookup<'_>) -> Option<(usize, usize)> {
    let bytes = line.as_bytes();
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    let mut entry_starts = Vec::new();
    let mut expecting_entry = false;
    for (i, &byte) in bytes.iter().enumerate().skip(open) {
        if let Some(q) = quote {
            if byte == q {
                quote = None;
            }
            continue;
        }
        if expecting_entry
            && depth == 1
            && !byte.is_ascii_whitespace()
            && byte != b']'
            && byte != b'}'
        {
            entry_starts.push(i);
            expecting_entry = false;
        }
        match byte {
            b'"' | b'\'' => quote = Some(byte),
            b'[' | b'{' => {
                depth += 1;
                if depth == 1 {
                    expecting_entry = true;
                }
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    break;
                }
            }
            b',' if depth == 1 => expecting_entry = true,
            _ => {}
        }
    }
    match lookup {
        FlowLookup::Index(index) => entry_starts.get(index).map(|&start| (start, start)),
        FlowLookup::Key(key) => entry_starts.into_iter().find_map(|start| {
            let key_len = key_written_at(&line[start..], key)?;
            let value = content_start(line, start + key_len + 1).unwrap_or(start);
            Some((start, value))
        }),
    }
}

/// serde reports an unknown field inside a buffered value (the internally tagged `policy`) at
/// the start of the enclosing mapping, not at the field. Finds the field itself among that
/// mapping's lines, the ones from the reported place until indentation drops below it.
fn locate_unknown_field(
    text: &str,
    message: &str,
    line: usize,
    column: usize,
) -> Option<(usize, usize)> {
    let field = message.split("unknown field `").nth(1)?.split('`').next()?;
    let first = line.checked_sub(1)?;
    let mapping_indent = column.saturating_sub(1);
    for (i, text_line) in text.lines().enumerate().skip(first) {
        if i > first && is_significant(text_line) && indent_of(text_line) < mapping_indent {
            break;
        }
        let mut from = 0;
        while let Some(offset) = text_line[from..].find(field) {
            let at = from + offset;
            let starts_token = text_line[..at].ends_with([' ', '{', ',']) || at == 0;
            if starts_token && key_written_at(&text_line[at..], field).is_some() {
                return Some((i + 1, text_line[..at].chars().count() + 1));
            }
            from = at + field.len();
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// models.yaml
// ---------------------------------------------------------------------------------------------

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
    /// Weights built into the binary (`hub`, if given, names the upstream repository).
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

    fn validate(&self) -> Result<(), (&'static str, String)> {
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
            (_, Some(repo), _) => check_repo_id(repo).map_err(|message| ("hub", message)),
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
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.len() == 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && !p.contains(char::is_whitespace))
    {
        Ok(())
    } else {
        Err(format!(
            "\"{repo}\" is not a hub repository id (expected \"org/repo\")"
        ))
    }
}

fn validate_models(file: &SourceFile, registry: &ModelRegistry) -> Result<(), ConfigError> {
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

// ---------------------------------------------------------------------------------------------
// experiments.yaml
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentsFile {
    pub experiments: BTreeMap<String, ExperimentSpec>,
}

impl ExperimentsFile {
    pub fn get(&self, name: &str) -> Option<&ExperimentSpec> {
        self.experiments.get(name)
    }

    /// Names in natural order (exp1, exp2, …, exp10), which is how people number them.
    pub fn experiment_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.experiments.keys().map(String::as_str).collect();
        names.sort_by_key(|name| natural_key(name));
        names
    }
}

fn natural_key(name: &str) -> (String, u64, String) {
    let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
    let number = name[stem.len()..].parse().unwrap_or(0);
    (stem.to_string(), number, name.to_string())
}

/// Weight precision a role runs with (`full`, `q4_0`, …, `native`).
pub use crate::model::weights::Precision;

/// The inferencer: which model, at which precision, where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceConfig {
    pub model: String,
    pub precision: Precision,
    #[serde(with = "device_profile_serde")]
    pub device: DeviceProfile,
    /// Used instead of `device` when a GPU is available.
    #[serde(
        default,
        with = "optional_device_profile_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub gpu_device: Option<DeviceProfile>,
}

/// One verifier; `model` defaults to the inference model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifierConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub precision: Precision,
    #[serde(with = "device_profile_serde")]
    pub device: DeviceProfile,
    #[serde(
        default,
        with = "optional_device_profile_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub gpu_device: Option<DeviceProfile>,
}

/// A role with every default filled in and the device chosen for this machine.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Role {
    pub model: String,
    pub precision: Precision,
    pub device: DeviceProfile,
}

/// Which hidden states to compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerSelection {
    /// N, 2N, … up to L (never 0: the embeddings match by construction).
    Every(usize),
    /// 1..=L.
    All,
    /// Exactly these hidden-state indices.
    List(Vec<usize>),
}

impl Default for LayerSelection {
    fn default() -> Self {
        LayerSelection::Every(8)
    }
}

impl LayerSelection {
    /// The hidden-state indices to check for a model with `n_layers` layers: sorted, without
    /// duplicates, and never beyond `n_layers` (L = after the final norm).
    pub fn resolve(&self, n_layers: usize) -> Vec<usize> {
        let selected: BTreeSet<usize> = match self {
            LayerSelection::Every(step) => {
                (1..=n_layers).filter(|l| l % step.max(&1) == 0).collect()
            }
            LayerSelection::All => (1..=n_layers).collect(),
            LayerSelection::List(layers) => {
                layers.iter().copied().filter(|&l| l <= n_layers).collect()
            }
        };
        selected.into_iter().collect()
    }
}

impl fmt::Display for LayerSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerSelection::Every(step) => write!(f, "every:{step}"),
            LayerSelection::All => f.write_str("all"),
            LayerSelection::List(layers) => write!(f, "{layers:?}"),
        }
    }
}

impl Serialize for LayerSelection {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            LayerSelection::List(layers) => layers.serialize(serializer),
            other => serializer.collect_str(other),
        }
    }
}

impl<'de> Deserialize<'de> for LayerSelection {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LayerVisitor;
        impl<'de> Visitor<'de> for LayerVisitor {
            type Value = LayerSelection;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "\"every:N\", \"all\" or a list of hidden-state indices such as [8, 16, 24]",
                )
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                if text.trim() == "all" {
                    return Ok(LayerSelection::All);
                }
                match text
                    .trim()
                    .strip_prefix("every:")
                    .map(|n| n.trim().parse::<usize>())
                {
                    Some(Ok(step)) if step > 0 => Ok(LayerSelection::Every(step)),
                    _ => Err(E::invalid_value(de::Unexpected::Str(text), &self)),
                }
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut layers = Vec::new();
                while let Some(layer) = seq.next_element::<usize>()? {
                    layers.push(layer);
                }
                Ok(LayerSelection::List(layers))
            }
        }
        deserializer.deserialize_any(LayerVisitor)
    }
}

/// Device profiles are written as strings (`cpu:bf16`) and parsed while deserializing, so a
/// bad one is reported at its own line by serde_yaml.
mod device_profile_serde {
    use super::*;

    pub fn serialize<S: Serializer>(
        profile: &DeviceProfile,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(profile)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DeviceProfile, D::Error> {
        deserializer.deserialize_str(DeviceVisitor)
    }

    pub(super) struct DeviceVisitor;

    impl Visitor<'_> for DeviceVisitor {
        type Value = DeviceProfile;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a device profile such as cpu, cpu:bf16, cuda:0 or cuda:0:bf16")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
            DeviceProfile::parse(text).map_err(E::custom)
        }
    }
}

mod optional_device_profile_serde {
    use super::*;

    pub fn serialize<S: Serializer>(
        profile: &Option<DeviceProfile>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match profile {
            Some(profile) => serializer.collect_str(profile),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<DeviceProfile>, D::Error> {
        deserializer
            .deserialize_str(device_profile_serde::DeviceVisitor)
            .map(Some)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptCategory {
    Short,
    Medium,
    Long,
}

impl PromptCategory {
    pub const ALL: [PromptCategory; 3] = [
        PromptCategory::Short,
        PromptCategory::Medium,
        PromptCategory::Long,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PromptCategory::Short => "short",
            PromptCategory::Medium => "medium",
            PromptCategory::Long => "long",
        }
    }
}

impl fmt::Display for PromptCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptSelection {
    pub category: PromptCategory,
    /// Distinct prompts to draw; defaults to the number of trials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    pub description: String,
    pub inference: InferenceConfig,
    pub verifiers: Vec<VerifierConfig>,
    #[serde(default)]
    pub layers: LayerSelection,
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Accept rate a verifier must exceed to PASS (see `stats::policy::verdict`).
    pub cutoff: f64,
    pub expected: TrialVerdict,
    pub trials: usize,
    pub prompts: PromptSelection,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_new_tokens: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_new_tokens: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
}

impl ExperimentSpec {
    /// Hidden-state indices to check for a model with `n_layers` layers.
    pub fn sampled_layers(&self, n_layers: usize) -> Vec<usize> {
        self.layers.resolve(n_layers)
    }

    /// The model verifier `index` runs (its own, or the inference model).
    pub fn verifier_model(&self, index: usize) -> Option<&str> {
        let verifier = self.verifiers.get(index)?;
        Some(verifier.model.as_deref().unwrap_or(&self.inference.model))
    }

    /// The inferencer's role; `gpu_available` picks `gpu_device` where one is given.
    pub fn inference_role(&self, gpu_available: bool) -> Role {
        let device = pick_device(
            self.inference.device,
            self.inference.gpu_device,
            gpu_available,
        );
        Role {
            model: self.inference.model.clone(),
            precision: self.inference.precision,
            device,
        }
    }

    /// Every verifier's role with the model default filled in.
    pub fn verifier_roles(&self, gpu_available: bool) -> Vec<Role> {
        self.verifiers
            .iter()
            .map(|v| Role {
                model: v
                    .model
                    .clone()
                    .unwrap_or_else(|| self.inference.model.clone()),
                precision: v.precision,
                device: pick_device(v.device, v.gpu_device, gpu_available),
            })
            .collect()
    }

    /// How many distinct prompts the run draws.
    pub fn prompt_count(&self) -> usize {
        self.prompts.count.unwrap_or(self.trials)
    }

    /// (min, max) new tokens: the experiment's overrides over the category's budget.
    pub fn new_token_budget(&self, prompts: &PromptsFile) -> (usize, usize) {
        let category = prompts.category(self.prompts.category);
        (
            self.min_new_tokens.unwrap_or(category.min_new_tokens),
            self.max_new_tokens.unwrap_or(category.max_new_tokens),
        )
    }

    /// The prompts for this run, one per trial index modulo [`Self::prompt_count`].
    pub fn select_prompts<'a>(&self, prompts: &'a PromptsFile) -> Vec<&'a Prompt> {
        prompts.select(
            self.prompts.category,
            self.prompt_count(),
            self.seed.unwrap_or(0),
        )
    }
}

fn pick_device(
    device: DeviceProfile,
    gpu_device: Option<DeviceProfile>,
    gpu_available: bool,
) -> DeviceProfile {
    match gpu_device {
        Some(gpu) if gpu_available => gpu,
        _ => device,
    }
}

fn validate_experiments(
    file: &SourceFile,
    experiments: &ExperimentsFile,
    models: &ModelRegistry,
    prompts: &PromptsFile,
) -> Result<(), ConfigError> {
    let root = KeyPath::root().key("experiments");
    if experiments.experiments.is_empty() {
        return Err(file.error_at(
            &root,
            "no experiments defined (expected at least one, e.g. exp1)",
        ));
    }
    for name in experiments.experiment_names() {
        let spec = &experiments.experiments[name];
        validate_experiment(file, &root.key(name), spec, models, prompts)?;
    }
    Ok(())
}

fn validate_experiment(
    file: &SourceFile,
    at: &KeyPath,
    spec: &ExperimentSpec,
    models: &ModelRegistry,
    prompts: &PromptsFile,
) -> Result<(), ConfigError> {
    let unknown_model =
        |id: &str| format!("unknown model \"{id}\"; known: {}", models.ids().join(", "));

    // Every model involved, with the key that names it, for the layer checks below.
    let mut involved: Vec<(&str, &ModelEntry)> = Vec::new();
    let inference_model = models.get(&spec.inference.model).ok_or_else(|| {
        file.error_at(
            &at.key("inference").key("model"),
            unknown_model(&spec.inference.model),
        )
    })?;
    involved.push((&spec.inference.model, inference_model));

    if spec.verifiers.is_empty() {
        return Err(file.error_at(&at.key("verifiers"), "no verifiers (expected at least one)"));
    }
    for (i, verifier) in spec.verifiers.iter().enumerate() {
        if let Some(id) = &verifier.model {
            let model = models.get(id).ok_or_else(|| {
                file.error_at(
                    &at.key("verifiers").index(i).key("model"),
                    unknown_model(id),
                )
            })?;
            involved.push((id, model));
        }
    }

    if !(spec.cutoff.is_finite() && (0.0..=1.0).contains(&spec.cutoff)) {
        return Err(file.error_at(
            &at.key("cutoff"),
            format!("{} is outside 0..=1 (expected a fraction)", spec.cutoff),
        ));
    }
    if spec.trials == 0 {
        return Err(file.error_at(&at.key("trials"), "0 trials (expected at least 1)"));
    }
    if spec.prompts.count == Some(0) {
        return Err(file.error_at(
            &at.key("prompts").key("count"),
            "0 prompts (expected at least 1)",
        ));
    }

    match &spec.layers {
        LayerSelection::List(layers) if layers.is_empty() => {
            return Err(file.error_at(
                &at.key("layers"),
                "empty layer list (expected at least one index)",
            ));
        }
        LayerSelection::List(layers) => {
            for (i, &layer) in layers.iter().enumerate() {
                if let Some((id, model)) = involved.iter().find(|(_, model)| layer > model.layers) {
                    return Err(file.error_at(
                        &at.key("layers").index(i),
                        format!(
                            "layer {layer} is beyond model \"{id}\" ({} layers; expected a hidden-state index in 0..={})",
                            model.layers, model.layers
                        ),
                    ));
                }
            }
        }
        selection => {
            if let Some((id, model)) = involved
                .iter()
                .find(|(_, model)| selection.resolve(model.layers).is_empty())
            {
                return Err(file.error_at(
                    &at.key("layers"),
                    format!(
                        "{selection} selects no layer of model \"{id}\" ({} layers)",
                        model.layers
                    ),
                ));
            }
        }
    }

    spec.policy
        .validate()
        .map_err(|message| file.error_at(&at.key("policy"), message))?;

    let (min_tokens, max_tokens) = spec.new_token_budget(prompts);
    if max_tokens == 0 {
        return Err(file.error_at(
            &at.key("max_new_tokens"),
            "0 (expected at least 1 new token)",
        ));
    }
    if min_tokens > max_tokens {
        let (key, origin) = match (spec.min_new_tokens, spec.max_new_tokens) {
            (_, Some(_)) => ("max_new_tokens", "min_new_tokens"),
            _ => ("min_new_tokens", "max_new_tokens"),
        };
        return Err(file.error_at(
            &at.key(key),
            format!(
                "min_new_tokens {min_tokens} > max_new_tokens {max_tokens} (expected min ≤ max; {origin} may come from prompts.yaml `{}`)",
                spec.prompts.category
            ),
        ));
    }

    if let Some(temperature) = spec.temperature {
        if !(temperature.is_finite() && temperature >= 0.0) {
            return Err(file.error_at(
                &at.key("temperature"),
                format!("{temperature} (expected ≥ 0; 0 = greedy)"),
            ));
        }
    }
    if let Some(top_p) = spec.top_p {
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(file.error_at(
                &at.key("top_p"),
                format!("{top_p} is outside (0, 1] (expected a probability mass)"),
            ));
        }
    }
    if spec.top_k == Some(0) {
        return Err(file.error_at(
            &at.key("top_k"),
            "0 (expected at least 1; omit for no top-k)",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// prompts.yaml
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptsFile {
    pub short: PromptCategoryConfig,
    pub medium: PromptCategoryConfig,
    pub long: PromptCategoryConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptCategoryConfig {
    pub min_new_tokens: usize,
    pub max_new_tokens: usize,
    pub prompts: Vec<Prompt>,
}

/// A prompt is either plain `text` (sent as one user turn) or a chat history in `messages`
/// ending with a user turn; exactly one of the two is given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prompt {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<ChatMessage>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    pub role: ChatRole,
    pub content: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    System,
    User,
    Assistant,
}

impl ChatRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ChatRole::System => "system",
            ChatRole::User => "user",
            ChatRole::Assistant => "assistant",
        }
    }
}

impl Prompt {
    /// The prompt as chat turns (plain text becomes a single user turn).
    pub fn messages(&self) -> Vec<ChatMessage> {
        match (&self.messages, &self.text) {
            (Some(messages), _) => messages.clone(),
            (None, Some(text)) => vec![ChatMessage {
                role: ChatRole::User,
                content: text.clone(),
            }],
            (None, None) => Vec::new(),
        }
    }

    /// The prompt as one string for models without a chat template and for display.
    pub fn plain_text(&self) -> String {
        match (&self.messages, &self.text) {
            (Some(messages), _) => messages
                .iter()
                .map(|m| format!("{}: {}", m.role.as_str(), m.content.trim_end()))
                .collect::<Vec<_>>()
                .join("\n\n"),
            (None, Some(text)) => text.clone(),
            (None, None) => String::new(),
        }
    }

    /// Characters of content, a cheap proxy for length (≈ 4 per token in English).
    pub fn char_count(&self) -> usize {
        self.messages()
            .iter()
            .map(|m| m.content.chars().count())
            .sum()
    }
}

impl PromptsFile {
    pub fn category(&self, category: PromptCategory) -> &PromptCategoryConfig {
        match category {
            PromptCategory::Short => &self.short,
            PromptCategory::Medium => &self.medium,
            PromptCategory::Long => &self.long,
        }
    }

    /// `count` prompts of `category` in an order fixed by `seed`: a seeded permutation of the
    /// category, repeated when `count` exceeds its size, so trial t uses entry t.
    pub fn select(&self, category: PromptCategory, count: usize, seed: u64) -> Vec<&Prompt> {
        let pool = &self.category(category).prompts;
        if pool.is_empty() {
            return Vec::new();
        }
        let mut order: Vec<usize> = (0..pool.len()).collect();
        let mut rng = SplitMix64(seed ^ (category as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for i in (1..order.len()).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        (0..count).map(|i| &pool[order[i % order.len()]]).collect()
    }
}

/// Tiny deterministic generator so prompt selection is stable across versions and platforms.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn validate_prompts(file: &SourceFile, prompts: &PromptsFile) -> Result<(), ConfigError> {
    let mut seen_ids = BTreeSet::new();
    for category in PromptCategory::ALL {
        let at = KeyPath::root().key(category.as_str());
        let config = prompts.category(category);
        if config.max_new_tokens == 0 {
            return Err(file.error_at(
                &at.key("max_new_tokens"),
                "0 (expected at least 1 new token)",
            ));
        }
        if config.min_new_tokens > config.max_new_tokens {
            return Err(file.error_at(
                &at.key("min_new_tokens"),
                format!(
                    "{} > max_new_tokens {} (expected min_new_tokens ≤ max_new_tokens)",
                    config.min_new_tokens, config.max_new_tokens
                ),
            ));
        }
        if config.prompts.is_empty() {
            return Err(file.error_at(
                &at.key("prompts"),
                "empty prompt category (expected at least one prompt)",
            ));
        }
        for (i, prompt) in config.prompts.iter().enumerate() {
            let at = at.key("prompts").index(i);
            if prompt.id.trim().is_empty() {
                return Err(file.error_at(&at.key("id"), "empty id (expected a short unique name)"));
            }
            if !seen_ids.insert(prompt.id.as_str()) {
                return Err(file.error_at(
                    &at.key("id"),
                    format!("duplicate prompt id \"{}\"", prompt.id),
                ));
            }
            match (&prompt.text, &prompt.messages) {
                (Some(_), Some(_)) => {
                    return Err(file.error_at(
                        &at.key("messages"),
                        "both `text` and `messages` given (expected one)",
                    ))
                }
                (None, None) => {
                    return Err(
                        file.error_at(&at, "neither `text` nor `messages` given (expected one)")
                    )
                }
                (Some(text), None) if text.trim().is_empty() => {
                    return Err(file.error_at(&at.key("text"), "empty text"))
                }
                (None, Some(messages)) => {
                    if messages.last().map(|m| m.role) != Some(ChatRole::User) {
                        return Err(file.error_at(
                            &at.key("messages"),
                            "the last message must have role user (the model answers it)",
                        ));
                    }
                    if let Some(j) = messages.iter().position(|m| m.content.trim().is_empty()) {
                        return Err(file.error_at(&at.key("messages").index(j), "empty content"));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
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
        let override_file = |name: &str| -> Result<Option<SourceFile>, ConfigError> {
            match dir.map(|d| d.join(name)).filter(|p| p.is_file()) {
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
            let user_models: ModelRegistry = user_models_file.parse("a `models:` mapping")?;
            validate_models(&user_models_file, &user_models)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin() -> ConfigSet {
        ConfigSet::builtin().unwrap_or_else(|e| panic!("built-in configs must load: {e}"))
    }

    #[test]
    fn builtin_configs_load_and_define_the_five_experiments() {
        let config = builtin();
        assert_eq!(config.experiments.experiment_names(), experiment_names());
        let expected = [
            ("exp1", 0.95, TrialVerdict::Pass),
            ("exp2", 0.90, TrialVerdict::Pass),
            ("exp3", 0.80, TrialVerdict::Reject),
            ("exp4", 0.70, TrialVerdict::Reject),
            ("exp5", 0.80, TrialVerdict::Reject),
        ];
        for (name, cutoff, verdict) in expected {
            let spec = config.experiments.get(name).unwrap();
            assert_eq!((spec.cutoff, spec.expected), (cutoff, verdict), "{name}");
            assert_eq!(spec.verifiers.len(), 3, "{name}");
            assert_eq!(spec.policy, PolicyConfig::default(), "{name}");
            let model = config.models.get(&spec.inference.model).unwrap();
            assert_eq!(spec.sampled_layers(model.layers), vec![8, 16, 24], "{name}");
        }
        let exp3 = config.experiments.get("exp3").unwrap();
        assert_eq!(exp3.inference.precision.to_string(), "q4_0");
        let exp5 = config.experiments.get("exp5").unwrap();
        assert!(exp5
            .verifier_roles(false)
            .iter()
            .all(|r| r.precision.to_string() == "q4_0"));
        // exp2 crosses precisions on a CPU-only machine: bf16 inference, f32 verifiers.
        let exp2 = config.experiments.get("exp2").unwrap();
        assert_eq!(
            exp2.inference_role(false).device,
            DeviceProfile::parse("cpu:bf16").unwrap()
        );
        assert_eq!(exp2.verifier_roles(false)[0].device, DeviceProfile::CPU_F32);
        assert_eq!(
            exp2.inference_role(true).device,
            DeviceProfile::parse("cuda:0").unwrap()
        );
        assert_eq!(config.dir, None);
    }

    #[test]
    fn builtin_models_have_the_published_shapes() {
        let config = builtin();
        let smol = config.models.get("smollm2-135m").unwrap();
        assert_eq!(
            (smol.layers, smol.hidden, smol.arch),
            (30, 576, ModelArch::Llama)
        );
        assert_eq!(
            smol.source.location(),
            WeightsLocation::Embedded {
                upstream: Some("HuggingFaceTB/SmolLM2-135M-Instruct")
            }
        );
        let qwen = config.models.get("qwen2.5-7b-instruct").unwrap();
        assert_eq!(
            (qwen.layers, qwen.hidden, qwen.arch),
            (28, 3584, ModelArch::Qwen2)
        );
        assert_eq!(
            qwen.source.location(),
            WeightsLocation::Hub {
                repo: "Qwen/Qwen2.5-7B-Instruct",
                revision: "main"
            }
        );
        assert_eq!(
            qwen.gguf.as_ref().unwrap().file,
            "qwen2.5-7b-instruct-q4_k_m.gguf"
        );
        assert_eq!(
            config.models.get("llama-3.1-8b-instruct").unwrap().layers,
            32
        );
        assert_eq!(
            config
                .models
                .get("mistral-7b-instruct-v0.3")
                .unwrap()
                .hidden,
            4096
        );
    }

    #[test]
    fn every_prompt_category_is_big_enough_and_long_prompts_are_long() {
        let config = builtin();
        for category in PromptCategory::ALL {
            let prompts = &config.prompts.category(category).prompts;
            assert!(
                prompts.len() >= 10,
                "{category}: only {} prompts",
                prompts.len()
            );
        }
        for prompt in &config.prompts.long.prompts {
            assert!(
                prompt.char_count() >= 6000,
                "long prompt {} has {} chars",
                prompt.id,
                prompt.char_count()
            );
        }
        for prompt in &config.prompts.short.prompts {
            assert!(
                prompt.char_count() < 400,
                "short prompt {} has {} chars",
                prompt.id,
                prompt.char_count()
            );
        }
        for prompt in &config.prompts.medium.prompts {
            let chars = prompt.char_count();
            assert!(
                (600..6000).contains(&chars),
                "medium prompt {} has {chars} chars",
                prompt.id
            );
        }
    }

    #[test]
    fn long_prompts_are_not_padded_by_repetition() {
        let config = builtin();
        for prompt in &config.prompts.long.prompts {
            let text = prompt.plain_text();
            let lines: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| l.len() > 40)
                .collect();
            let distinct: BTreeSet<&str> = lines.iter().copied().collect();
            assert_eq!(
                distinct.len(),
                lines.len(),
                "long prompt {} repeats a line",
                prompt.id
            );
        }
    }

    #[test]
    fn prompt_selection_is_deterministic_and_cycles() {
        let config = builtin();
        let ids = |seed| -> Vec<String> {
            config
                .prompts
                .select(PromptCategory::Short, 25, seed)
                .iter()
                .map(|p| p.id.clone())
                .collect()
        };
        assert_eq!(ids(7), ids(7));
        assert_ne!(ids(7), ids(8));
        let first = ids(7);
        let n = config.prompts.short.prompts.len();
        assert_eq!(first.len(), 25);
        assert_eq!(
            first[..n].iter().collect::<BTreeSet<_>>().len(),
            n,
            "a full pass before repeating"
        );
        assert_eq!(first[n], first[0]);
    }

    /// Pinned on a synthetic pool, so that a change to the algorithm (which would silently
    /// change every run's prompts) is noticed while editing prompts.yaml is not.
    #[test]
    fn prompt_selection_algorithm_is_pinned() {
        let pool: String = (0..6)
            .map(|i| format!("    - {{id: p{i}, text: t}}\n"))
            .collect();
        let category = |name: &str, pool: &str| {
            format!("{name}:\n  min_new_tokens: 1\n  max_new_tokens: 2\n  prompts:\n{pool}")
        };
        let yaml = category("short", &pool)
            + &category("medium", "    - {id: m, text: t}\n")
            + &category("long", "    - {id: l, text: t}\n");
        let prompts: PromptsFile = serde_yaml::from_str(&yaml).unwrap();
        let ids: Vec<&str> = prompts
            .select(PromptCategory::Short, 8, 42)
            .iter()
            .map(|p| p.id.as_str())
            .collect();
        assert_eq!(ids, PINNED_SELECTION);
    }

    const PINNED_SELECTION: [&str; 8] = ["p4", "p3", "p0", "p2", "p5", "p1", "p4", "p3"];

    #[test]
    fn sampled_layers_follow_the_hf_convention() {
        let every = |n| LayerSelection::Every(n);
        assert_eq!(every(8).resolve(30), vec![8, 16, 24]);
        assert_eq!(every(8).resolve(32), vec![8, 16, 24, 32]);
        assert_eq!(every(40).resolve(30), Vec::<usize>::new());
        assert_eq!(LayerSelection::All.resolve(3), vec![1, 2, 3]);
        assert_eq!(
            LayerSelection::List(vec![24, 0, 8, 8, 99]).resolve(30),
            vec![0, 8, 24]
        );
    }

    #[test]
    fn layer_selection_parses_both_shapes() {
        #[derive(Deserialize)]
        struct Holder {
            layers: LayerSelection,
        }
        let parse = |yaml: &str| serde_yaml::from_str::<Holder>(yaml).map(|h| h.layers);
        assert_eq!(parse("layers: every:4").unwrap(), LayerSelection::Every(4));
        assert_eq!(parse("layers: all").unwrap(), LayerSelection::All);
        assert_eq!(
            parse("layers: [8, 16]").unwrap(),
            LayerSelection::List(vec![8, 16])
        );
        let err = parse("layers: every:0").unwrap_err().to_string();
        assert!(err.contains("every:0"), "{err}");
        assert!(parse("layers: sometimes").is_err());
        assert!(parse("layers: [-1]").is_err());
    }

    #[test]
    fn experiment_specs_round_trip_through_yaml() {
        let config = builtin();
        let yaml = serde_yaml::to_string(&config.experiments).unwrap();
        let back: ExperimentsFile = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(back, config.experiments);
    }

    #[test]
    fn locator_finds_block_flow_and_sequence_positions() {
        let text = "\
# comment
experiments:
  exp1:
    description: x   # note
    inference: {model: m, precision: full, device: cpu}
    verifiers:
      - precision: full
        model: foo
      - {precision: q4_0, model: bar}
    layers: [8, 16, 40]
    cutoff: 1.5
  exp2:
    cutoff: 0.5
    list:
    - a
    - b: 1
      c: 2
";
        let at = |path: KeyPath| locate_key(text, &path);
        let exp1 = KeyPath::root().key("experiments").key("exp1");
        assert_eq!(at(exp1.key("cutoff")), Some((11, 5)));
        assert_eq!(at(exp1.key("inference").key("precision")), Some((5, 27)));
        assert_eq!(
            at(exp1.key("verifiers").index(0).key("model")),
            Some((8, 9))
        );
        assert_eq!(at(exp1.key("verifiers").index(1)), Some((9, 7)));
        assert_eq!(
            at(exp1.key("verifiers").index(1).key("model")),
            Some((9, 27))
        );
        assert_eq!(at(exp1.key("layers").index(2)), Some((10, 21)));
        let exp2 = KeyPath::root().key("experiments").key("exp2");
        assert_eq!(at(exp2.key("cutoff")), Some((13, 5)));
        assert_eq!(at(exp2.key("list").index(1).key("c")), Some((17, 7)));
        // Missing keys fall back to the deepest ancestor found.
        assert_eq!(at(exp2.key("trials")), Some((12, 3)));
        assert_eq!(at(KeyPath::root().key("nothing")), None);
        // Keys with dots are one segment; quoted keys are found too.
        let dotted = "models:\n  qwen2.5-7b: {layers: 28}\n  \"quoted\":\n    layers: 3\n";
        let models = KeyPath::root().key("models");
        assert_eq!(
            locate_key(dotted, &models.key("qwen2.5-7b").key("layers")),
            Some((2, 16))
        );
        assert_eq!(
            locate_key(dotted, &models.key("quoted").key("layers")),
            Some((4, 5))
        );
    }

    #[test]
    fn locator_skips_block_scalars() {
        let text = "short:\n  prompts:\n    - id: a\n      text: |\n        id: not-this\n        - fake\n    - id: b\n";
        let prompts = KeyPath::root().key("short").key("prompts");
        assert_eq!(locate_key(text, &prompts.index(1).key("id")), Some((7, 7)));
        assert_eq!(locate_key(text, &prompts.index(2)), Some((2, 3)));
    }

    #[test]
    fn key_paths_display_like_serde_yaml() {
        let path = KeyPath::root()
            .key("experiments")
            .key("exp3")
            .key("verifiers")
            .index(1)
            .key("model");
        assert_eq!(path.to_string(), "experiments.exp3.verifiers[1].model");
    }

    /// One directory per malformed config under tests/fixtures/bad_configs, each with an
    /// `expected_error.yaml` naming the file, line and text the error must contain.
    #[test]
    fn bad_config_fixtures_report_file_line_and_key() {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Expected {
            file: String,
            line: usize,
            contains: Vec<String>,
        }
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad_configs");
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&fixtures)
            .unwrap_or_else(|e| panic!("{}: {e}", fixtures.display()))
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.is_dir())
            .collect();
        dirs.sort();
        assert!(
            dirs.len() >= 7,
            "expected at least 7 fixtures, found {}",
            dirs.len()
        );
        for dir in dirs {
            let expected_text = std::fs::read_to_string(dir.join("expected_error.yaml")).unwrap();
            let expected: Expected = serde_yaml::from_str(&expected_text).unwrap();
            let err = match ConfigSet::load(Some(&dir)) {
                Ok(_) => panic!("{}: loaded without error", dir.display()),
                Err(err) => err,
            };
            let text = err.to_string();
            let place = format!("{}:{}:", dir.join(&expected.file).display(), expected.line);
            assert!(
                text.starts_with(&place),
                "{}: expected {place}…, got: {text}",
                dir.display()
            );
            assert_eq!(err.line(), expected.line, "{text}");
            for needle in &expected.contains {
                assert!(
                    text.contains(needle),
                    "{}: `{needle}` missing from: {text}",
                    dir.display()
                );
            }
        }
    }

    #[test]
    fn user_models_merge_over_builtins_and_other_files_fall_back() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(MODELS_FILE),
            "models:\n  tiny-local:\n    description: a local test model\n    arch: llama\n    layers: 4\n    \
             hidden: 64\n    source: {path: /tmp/tiny.gguf}\n",
        )
        .unwrap();
        let config = ConfigSet::load(Some(dir.path())).unwrap();
        assert!(config.models.get("tiny-local").is_some());
        assert!(
            config.models.get("smollm2-135m").is_some(),
            "built-in models stay"
        );
        assert_eq!(
            config.experiments,
            builtin().experiments,
            "experiments fall back to the built-in file"
        );
        assert_eq!(config.dir.as_deref(), Some(dir.path()));
        assert_eq!(
            config.models.get("tiny-local").unwrap().source.location(),
            WeightsLocation::Path(Path::new("/tmp/tiny.gguf"))
        );
    }

    #[test]
    fn a_missing_explicit_dir_is_an_error() {
        let err = ConfigSet::load(Some(Path::new("/nonexistent/verillm-config"))).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/verillm-config"),
            "{err}"
        );
    }

    #[test]
    fn model_sources_must_be_one_shape() {
        let source = |yaml: &str| {
            serde_yaml::from_str::<ModelSource>(yaml)
                .unwrap()
                .validate()
        };
        assert!(source("{embedded: true}").is_ok());
        assert!(source("{hub: a/b, revision: v1}").is_ok());
        assert!(source("{path: /x}").is_ok());
        assert_eq!(source("{hub: a/b, path: /x}").unwrap_err().0, "path");
        assert_eq!(source("{embedded: false}").unwrap_err().0, "embedded");
        assert_eq!(
            source("{embedded: true, revision: v1}").unwrap_err().0,
            "revision"
        );
        assert_eq!(source("{hub: not-a-repo}").unwrap_err().0, "hub");
    }
}
