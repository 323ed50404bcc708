//! `experiments.yaml`: experiment specs, the roles they define, layer selection, and
//! validation against the models and prompts in effect.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::models::{ModelEntry, ModelRegistry};
use super::prompts::{Prompt, PromptCategory, PromptsFile};
use super::{ConfigError, KeyPath, Precision, SourceFile};
use crate::model::device::DeviceProfile;
use crate::record::limits::MAX_TRIALS;
use crate::record::results::TrialVerdict;
use crate::stats::policy::PolicyConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentsFile {
    pub experiments: BTreeMap<String, ExperimentSpec>,
}

impl ExperimentsFile {
    pub fn get(&self, name: &str) -> Option<&ExperimentSpec> {
        self.experiments.get(name)
    }

    /// Names in natural order (exp1, exp2, …, exp10), which is how people number them; the
    /// cheat matrix's scenarios after the others (the console lists the experiments first).
    pub fn experiment_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.experiments.keys().map(String::as_str).collect();
        names.sort_by_key(|name| (is_matrix_scenario(name), natural_key(name)));
        names
    }
}

/// The cheat matrix's scenarios (`cheat-*`, `control-*` in configs/experiments.yaml): run by
/// name or by the matrix, left out of `all`.
pub fn is_matrix_scenario(name: &str) -> bool {
    name.starts_with("cheat-") || name.starts_with("control-")
}

fn natural_key(name: &str) -> (String, u64, String) {
    let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
    let number = name[stem.len()..].parse().unwrap_or(0);
    (stem.to_string(), number, name.to_string())
}

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
    /// A cheat the inferencer runs while its bundle claims the honest computation
    /// (engine::cheat); None: honest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cheat: Option<crate::engine::cheat::Cheat>,
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
    /// A lazy verifier answers PASS without computing (no prefill): a fabricated report of
    /// every check accepted. What `plant` is there to catch.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lazy: bool,
}

/// The requester's audit of its verifiers: each trial's bundle is, with `probability` (a
/// seeded draw per trial), a known-bad one made by `cheat` instead of the honest inference,
/// and its expected verdict is then REJECT. A verifier that PASSes a planted bundle is caught.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlantSpec {
    pub probability: f64,
    pub cheat: crate::engine::cheat::Cheat,
}

impl PlantSpec {
    /// Whether trial `trial` of a run with seed `seed` gets a planted bundle.
    pub fn planted(&self, seed: u64, trial: usize) -> bool {
        // Its own stream, apart from the sampling cheats' draws of the same seed.
        crate::engine::cheat::cheat_draw(seed ^ 0x706c_616e_7465_6421, trial as u64)
            < self.probability
    }
}

/// A role with every default filled in and the device chosen for this machine.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Role {
    pub model: String,
    pub precision: Precision,
    pub device: DeviceProfile,
}

/// Layers each verifier challenges unless told otherwise. With L = 30 one verifier catches a
/// one-layer cheat with probability c/L; c = 4 costs 1.68 s against a full prefill's 2.78 s
/// at N = 128 on this machine (docs/commitment.md, measure-commitment.sh).
pub const DEFAULT_CHALLENGED_LAYERS: usize = 4;

/// How a trial's verifiers check the inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerificationMode {
    /// One prefill per verifier over prompt + output, compared at the shipped layers.
    #[default]
    Full,
    /// Commit, challenge, open, and recompute the challenged layers alone.
    Segment,
}

impl VerificationMode {
    pub fn is_full(&self) -> bool {
        *self == VerificationMode::Full
    }

    pub fn name(&self) -> &'static str {
        match self {
            VerificationMode::Full => "full",
            VerificationMode::Segment => "segment",
        }
    }
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

impl LayerSelection {
    /// [`Self::resolve`], refusing a listed layer beyond the model (instead of dropping it) and
    /// a selection that checks nothing.
    pub fn resolve_checked(&self, n_layers: usize) -> Result<Vec<usize>, String> {
        if let LayerSelection::List(listed) = self {
            if let Some(beyond) = listed.iter().find(|&&layer| layer > n_layers) {
                return Err(format!(
                    "layer {beyond} is beyond this {n_layers}-layer model (hidden states \
                     0..={n_layers})"
                ));
            }
        }
        let layers = self.resolve(n_layers);
        if !layers.iter().any(|&layer| layer >= 1) {
            return Err(format!(
                "layers {self} select no checked layer of this {n_layers}-layer model (0 is \
                 the embeddings)"
            ));
        }
        Ok(layers)
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
    /// Accept rate a verifier must exceed to PASS (see `stats::policy::verdict`). Where the
    /// pairing's tier is calibrated the sequential test decides instead; the cutoff's verdict is
    /// still recorded beside it.
    pub cutoff: f64,
    /// False-alarm rate α of the sequential test (default 1e-3, `stats::sequential`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// Miss rate β of the sequential test (default 1e-3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta: Option<f64>,
    /// Per-check rejection rate the sequential test must catch (H1; default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p1: Option<f64>,
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
    /// Positions per verifier prefill chunk (`run --chunk` overrides); default: the device's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<usize>,
    /// Known-bad bundles planted among the trials to catch lazy verifiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plant: Option<PlantSpec>,
    /// `full` (default: one prefill per verifier) or `segment` (commit, challenge, open;
    /// docs/commitment.md).
    #[serde(default, skip_serializing_if = "VerificationMode::is_full")]
    pub mode: VerificationMode,
    /// Decoder layers each verifier challenges in segment mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge_layers: Option<usize>,
    /// Segment mode: time one full prefill per verifier role as the reference the segment
    /// time is compared with (default true; false skips that cost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_prefill: Option<bool>,
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

    /// The inferencer's role, its device chosen by `gpu`.
    pub fn inference_role(&self, gpu: GpuUse) -> Role {
        let device = pick_device(self.inference.device, self.inference.gpu_device, gpu);
        Role {
            model: self.inference.model.clone(),
            precision: self.inference.precision,
            device,
        }
    }

    /// Whether a bundle of this experiment may declare `precision` and `dtype` (a dtype name)
    /// for its inference: the inferencer runs on its `device`, on its `gpu_device` where the
    /// inferring machine had a GPU, or on the profile `run --gpu` forced there (`forced`). The
    /// declared dtype picks the precision tier a bundle is judged in, so it is held to these.
    /// Refused, the error lists what is admitted ("full in f32 or full in f16").
    pub fn check_admitted_inference(
        &self,
        forced: Option<DeviceProfile>,
        precision: &str,
        dtype: &str,
    ) -> Result<(), String> {
        let mut uses = vec![GpuUse::None, GpuUse::Configured];
        uses.extend(forced.map(GpuUse::Forced));
        let mut admitted: Vec<(String, &'static str)> = uses
            .into_iter()
            .map(|gpu| {
                let role = self.inference_role(gpu);
                (
                    role.precision.to_string(),
                    crate::model::device::dtype_name(role.device.dtype),
                )
            })
            .collect();
        admitted.dedup();
        if admitted
            .iter()
            .any(|(p, d)| (p.as_str(), *d) == (precision, dtype))
        {
            return Ok(());
        }
        Err(admitted
            .iter()
            .map(|(p, d)| format!("{p} in {d}"))
            .collect::<Vec<_>>()
            .join(" or "))
    }

    /// Whether each of `count` verifiers is lazy (cycling through the configured ones, as
    /// `--verifiers N` does).
    pub fn lazy_verifiers(&self, count: usize) -> Vec<bool> {
        (0..count)
            .map(|i| {
                self.verifiers
                    .get(i % self.verifiers.len().max(1))
                    .is_some_and(|v| v.lazy)
            })
            .collect()
    }

    /// Every verifier's role with the model default filled in.
    pub fn verifier_roles(&self, gpu: GpuUse) -> Vec<Role> {
        self.verifiers
            .iter()
            .map(|v| Role {
                model: v
                    .model
                    .clone()
                    .unwrap_or_else(|| self.inference.model.clone()),
                precision: v.precision,
                device: pick_device(v.device, v.gpu_device, gpu),
            })
            .collect()
    }

    /// How many distinct prompts a run of `trials` trials draws: `prompts.count`, else one per
    /// trial.
    pub fn prompt_count(&self, trials: usize) -> usize {
        self.prompts.count.unwrap_or(trials)
    }

    /// (min, max) new tokens: the experiment's overrides over the category's budget.
    pub fn new_token_budget(&self, prompts: &PromptsFile) -> (usize, usize) {
        let category = prompts.category(self.prompts.category);
        (
            self.min_new_tokens.unwrap_or(category.min_new_tokens),
            self.max_new_tokens.unwrap_or(category.max_new_tokens),
        )
    }

    /// The prompts for a run of `trials` trials drawn with `seed` (the run's, which may
    /// override the experiment's), one per trial index modulo [`Self::prompt_count`].
    pub fn select_prompts<'a>(
        &self,
        prompts: &'a PromptsFile,
        trials: usize,
        seed: u64,
    ) -> Vec<&'a Prompt> {
        prompts.select(self.prompts.category, self.prompt_count(trials), seed)
    }
}

/// Which device a role with a `gpu_device` runs on. Roles without one always use `device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuUse {
    /// No GPU: every role uses its `device`.
    None,
    /// A GPU is available: roles use their `gpu_device`.
    Configured,
    /// Roles with a `gpu_device` use this profile instead (e.g. `run --gpu cuda:0:bf16`).
    Forced(DeviceProfile),
}

fn pick_device(
    device: DeviceProfile,
    gpu_device: Option<DeviceProfile>,
    gpu: GpuUse,
) -> DeviceProfile {
    match (gpu_device, gpu) {
        (Some(_), GpuUse::Forced(profile)) => profile,
        (Some(configured), GpuUse::Configured) => configured,
        _ => device,
    }
}

pub(super) fn validate_experiments(
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
        // The id names the run's results folder: it must stay one plain path component.
        let plain = !name.is_empty()
            && name != "."
            && name != ".."
            && name.chars().all(crate::util::is_plain_name_char);
        if !plain {
            return Err(file.error_at(
                &root.key(name),
                format!(
                    "experiment id \"{name}\" is not a plain name (expected letters, digits, '_', '-', '.')"
                ),
            ));
        }
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

    if let Some(crate::engine::cheat::Cheat::SkipLayer(index)) = spec.inference.cheat {
        if index >= inference_model.layers {
            return Err(file.error_at(
                &at.key("inference").key("cheat").key("skip_layer"),
                format!(
                    "decoder layer {index} is beyond model \"{}\" (layers 0..{})",
                    spec.inference.model, inference_model.layers
                ),
            ));
        }
    }
    if spec.verifiers.is_empty() {
        return Err(file.error_at(&at.key("verifiers"), "no verifiers (expected at least one)"));
    }
    let max = crate::record::limits::MAX_VERIFIERS;
    if spec.verifiers.len() > max {
        return Err(file.error_at(
            &at.key("verifiers"),
            format!(
                "{} verifiers (expected at most {max})",
                spec.verifiers.len()
            ),
        ));
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

    if !(spec.cutoff.is_finite() && (0.0..1.0).contains(&spec.cutoff)) {
        return Err(file.error_at(
            &at.key("cutoff"),
            format!(
                "{} is outside [0, 1) (a verifier passes when its accept rate exceeds the \
                 cutoff, so 1 could never pass; use e.g. 0.999)",
                spec.cutoff
            ),
        ));
    }
    for (key, value, range) in [
        ("alpha", spec.alpha, "(0, 0.5)"),
        ("beta", spec.beta, "(0, 0.5)"),
        ("p1", spec.p1, "(0, 1)"),
    ] {
        let limit = if key == "p1" { 1.0 } else { 0.5 };
        if let Some(v) = value.filter(|v| !(v.is_finite() && *v > 0.0 && *v < limit)) {
            return Err(file.error_at(
                &at.key(key),
                format!("{v} is outside {range} (a rate of the sequential test)"),
            ));
        }
    }
    if spec.trials == 0 || spec.trials > MAX_TRIALS {
        return Err(file.error_at(
            &at.key("trials"),
            format!("{} trials (expected 1..={MAX_TRIALS})", spec.trials),
        ));
    }
    if let Some(count) = spec.prompts.count.filter(|&c| c == 0 || c > MAX_TRIALS) {
        return Err(file.error_at(
            &at.key("prompts").key("count"),
            format!("{count} prompts (expected 1..={MAX_TRIALS})"),
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
            // hidden.0 (the embeddings) is recorded but never checked: a list of nothing else
            // would give every trial zero checks, an accept rate of 0 and a REJECT for honest
            // runs. (every:N and all start at 1.)
            if !layers.iter().any(|&layer| layer >= 1) {
                return Err(file.error_at(
                    &at.key("layers"),
                    format!(
                        "{layers:?} selects no checked layer (0 is the embeddings, which are \
                         not checked; expected at least one index >= 1)"
                    ),
                ));
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
    if let Some(plant) = &spec.plant {
        if !(0.0..=1.0).contains(&plant.probability) {
            return Err(file.error_at(
                &at.key("plant").key("probability"),
                format!("{} is outside [0, 1]", plant.probability),
            ));
        }
    }
    if spec.chunk == Some(0) {
        return Err(file.error_at(&at.key("chunk"), "0 positions (expected at least 1)"));
    }
    if spec.top_k == Some(0) {
        return Err(file.error_at(
            &at.key("top_k"),
            "0 (expected at least 1; omit for no top-k)",
        ));
    }
    Ok(())
}
