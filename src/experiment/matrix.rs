//! The cheat matrix (issue 18): rows (experiments by id, each a cheat or an honest control) ×
//! precision pairings. This file holds the configuration (`configs/matrix.yaml`), the plan of
//! cells and the aggregation of finished trials into the matrix report; running the cells is
//! `matrix_run.rs`, the table and JSON `matrix_output.rs`.
//!
//! Statistics per pairing, from its control trials only:
//! - the sequential test's p0: the Clopper–Pearson upper bound of their per-check rejections;
//! - the trial-level test's honest distribution of per-token drift (`stats::distribution_test`).
//!   A control trial is judged against the *other* control trials of its pairing (leave one
//!   out), so its false alarm is measured on a trial the calibration never saw.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use super::config::{ExperimentSpec, Role};
use super::decision::{decide_with, DecisionSettings, HonestCounts};
use crate::model::device::DeviceProfile;
use crate::model::weights::Precision;
use crate::record::results::TrialResult;
use crate::stats::distribution_test::{test_trial, token_values, HonestProfile, TrialLevelOutcome};
use crate::stats::intervals::{clopper_pearson, RateInterval};
use crate::stats::sequential::{SequentialDecision, DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_P1};

pub const MATRIX_FILE: &str = "matrix.yaml";
const BUILTIN_MATRIX: &str = include_str!("../../configs/matrix.yaml");
/// Confidence of the intervals the matrix reports (two-sided).
pub const INTERVAL_CONFIDENCE: f64 = 0.95;
/// A matrix file larger than this is refused before it is parsed.
const MAX_MATRIX_BYTES: u64 = 1 << 20;

/// What a row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowKind {
    Cheat,
    Control,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixRow {
    pub id: String,
    /// An experiment id of experiments.yaml.
    pub experiment: String,
    pub kind: RowKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifier_precision: Option<String>,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairingInference {
    pub device: String,
    /// Replaces the row's precision only where that is `full`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairingVerifier {
    pub precision: String,
    pub device: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pairing {
    pub id: String,
    pub label: String,
    pub inference: PairingInference,
    pub verifier: PairingVerifier,
}

/// `configs/matrix.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixConfig {
    pub trials: usize,
    pub max_new_tokens: usize,
    #[serde(default = "one")]
    pub verifiers: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p1: Option<f64>,
    pub pairings: Vec<Pairing>,
    pub rows: Vec<MatrixRow>,
}

fn one() -> usize {
    1
}

impl MatrixConfig {
    /// `path`, else `<config dir>/matrix.yaml` when there is one, else the built-in file.
    pub fn load(path: Option<&Path>, config_dir: Option<&Path>) -> Result<(Self, String)> {
        let file = match path {
            Some(p) => Some(p.to_path_buf()),
            None => config_dir
                .map(|d| d.join(MATRIX_FILE))
                .filter(|p| p.is_file()),
        };
        let (text, name) = match file {
            Some(p) => {
                let size = std::fs::metadata(&p)
                    .with_context(|| format!("reading {}", p.display()))?
                    .len();
                ensure!(
                    size <= MAX_MATRIX_BYTES,
                    "{}: {size} bytes, more than a matrix file may have ({MAX_MATRIX_BYTES})",
                    p.display()
                );
                let text = std::fs::read_to_string(&p)
                    .with_context(|| format!("reading {}", p.display()))?;
                (text, p.display().to_string())
            }
            None => (
                BUILTIN_MATRIX.to_string(),
                "configs/matrix.yaml".to_string(),
            ),
        };
        let config: MatrixConfig =
            serde_yaml::from_str(&text).map_err(|e| anyhow!("{name}: {e}"))?;
        Ok((config, name))
    }

    /// Checks ids, kinds and values against the experiments; `file` names the file in errors.
    pub fn validate(
        &self,
        experiments: &dyn Fn(&str) -> Option<ExperimentSpec>,
        file: &str,
    ) -> Result<()> {
        ensure!(
            (1..=crate::record::limits::MAX_TRIALS).contains(&self.trials),
            "{file}: trials {}: expected 1..={}",
            self.trials,
            crate::record::limits::MAX_TRIALS
        );
        ensure!(
            self.max_new_tokens >= 1,
            "{file}: max_new_tokens must be at least 1"
        );
        ensure!(
            (1..=crate::record::limits::MAX_VERIFIERS).contains(&self.verifiers),
            "{file}: verifiers {}: expected 1..={}",
            self.verifiers,
            crate::record::limits::MAX_VERIFIERS
        );
        ensure!(!self.pairings.is_empty(), "{file}: pairings: none defined");
        ensure!(!self.rows.is_empty(), "{file}: rows: none defined");
        for (key, value, limit) in [
            ("alpha", self.alpha, 0.5),
            ("beta", self.beta, 0.5),
            ("p1", self.p1, 1.0),
        ] {
            if let Some(v) = value.filter(|v| !(v.is_finite() && *v > 0.0 && *v < limit)) {
                bail!("{file}: {key} {v}: expected a rate in (0, {limit})");
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, p) in self.pairings.iter().enumerate() {
            let at = format!("{file}: pairings[{i}] ({})", p.id);
            ensure!(
                plain(&p.id),
                "{at}: id is not a plain name (letters, digits, '_', '-', '.')"
            );
            ensure!(seen.insert(format!("p:{}", p.id)), "{at}: id used twice");
            DeviceProfile::parse(&p.inference.device)
                .map_err(|e| anyhow!("{at}: inference.device: {e}"))?;
            DeviceProfile::parse(&p.verifier.device)
                .map_err(|e| anyhow!("{at}: verifier.device: {e}"))?;
            if let Some(prec) = &p.inference.precision {
                prec.parse::<Precision>()
                    .map_err(|e| anyhow!("{at}: inference.precision: {e}"))?;
            }
            p.verifier
                .precision
                .parse::<Precision>()
                .map_err(|e| anyhow!("{at}: verifier.precision: {e}"))?;
        }
        for (i, r) in self.rows.iter().enumerate() {
            let at = format!("{file}: rows[{i}] ({})", r.id);
            ensure!(
                plain(&r.id),
                "{at}: id is not a plain name (letters, digits, '_', '-', '.')"
            );
            ensure!(seen.insert(format!("r:{}", r.id)), "{at}: id used twice");
            ensure!(
                experiments(&r.experiment).is_some(),
                "{at}: experiment `{}` is not in experiments.yaml",
                r.experiment
            );
            for (key, value) in [
                ("precision", &r.precision),
                ("verifier_precision", &r.verifier_precision),
            ] {
                if let Some(v) = value {
                    v.parse::<Precision>()
                        .map_err(|e| anyhow!("{at}: {key}: {e}"))?;
                }
            }
        }
        Ok(())
    }

    pub fn decision_settings(&self) -> DecisionSettings {
        DecisionSettings {
            alpha: self.alpha.unwrap_or(DEFAULT_ALPHA),
            beta: self.beta.unwrap_or(DEFAULT_BETA),
            p1: self.p1.unwrap_or(DEFAULT_P1),
        }
    }

    /// Keeps the pairings and rows named (comma lists of ids; controls are kept whatever
    /// `cheats` says: they calibrate the pairings).
    pub fn select(&mut self, pairings: Option<&str>, cheats: Option<&str>) -> Result<()> {
        if let Some(list) = pairings {
            let wanted = split_ids(list);
            for id in &wanted {
                ensure!(
                    self.pairings.iter().any(|p| &p.id == id),
                    "--pairings: `{id}` is not a pairing of the matrix; known: {}",
                    self.pairings
                        .iter()
                        .map(|p| p.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            self.pairings.retain(|p| wanted.contains(&p.id));
        }
        if let Some(list) = cheats {
            let wanted = split_ids(list);
            for id in &wanted {
                ensure!(
                    self.rows
                        .iter()
                        .any(|r| &r.id == id && r.kind == RowKind::Cheat),
                    "--cheats: `{id}` is not a cheat row of the matrix; known: {}",
                    self.rows
                        .iter()
                        .filter(|r| r.kind == RowKind::Cheat)
                        .map(|r| r.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            self.rows
                .retain(|r| r.kind == RowKind::Control || wanted.contains(&r.id));
        }
        Ok(())
    }

    /// Every cell, controls first (a pairing's calibration is then there before its cheats).
    pub fn cells(&self) -> Vec<(usize, usize)> {
        let mut cells = Vec::new();
        for kind in [RowKind::Control, RowKind::Cheat] {
            for (r, row) in self.rows.iter().enumerate().filter(|(_, r)| r.kind == kind) {
                let _ = row;
                for p in 0..self.pairings.len() {
                    cells.push((r, p));
                }
            }
        }
        cells
    }
}

fn split_ids(list: &str) -> Vec<String> {
    list.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn plain(id: &str) -> bool {
    !id.is_empty() && id != "." && id != ".." && id.chars().all(crate::util::is_plain_name_char)
}

/// Where a cell's run lives inside the matrix folder: `<row>/<pairing>`.
pub fn cell_dir(out: &Path, row: &str, pairing: &str) -> PathBuf {
    out.join(row).join(pairing)
}

/// The roles of a cell: the experiment's inferencer with the pairing's device (and precision
/// where the row's is `full`), the pairing's verifier (the row's precision if it names one).
pub fn cell_roles(
    spec: &ExperimentSpec,
    row: &MatrixRow,
    pairing: &Pairing,
    verifiers: usize,
) -> Result<(Role, Vec<Role>)> {
    let base = spec.inference_role(super::config::GpuUse::None);
    let row_precision = match &row.precision {
        Some(p) => p.parse::<Precision>().map_err(|e| anyhow!(e))?,
        None => base.precision,
    };
    let precision = match (&pairing.inference.precision, row_precision) {
        (Some(p), Precision::Full) => p.parse::<Precision>().map_err(|e| anyhow!(e))?,
        (_, p) => p,
    };
    let inference = Role {
        model: base.model.clone(),
        precision,
        device: DeviceProfile::parse(&pairing.inference.device).map_err(|e| anyhow!(e))?,
    };
    let verifier_precision = row
        .verifier_precision
        .as_deref()
        .unwrap_or(&pairing.verifier.precision)
        .parse::<Precision>()
        .map_err(|e| anyhow!(e))?;
    let verifier = Role {
        model: base.model,
        precision: verifier_precision,
        device: DeviceProfile::parse(&pairing.verifier.device).map_err(|e| anyhow!(e))?,
    };
    Ok((inference, vec![verifier; verifiers]))
}

// ---------------------------------------------------------------------------------------------
// Aggregation
// ---------------------------------------------------------------------------------------------

/// One trial of a cell as the matrix judges it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatrixTrial {
    pub trial: usize,
    pub prompt: String,
    pub generated_tokens: usize,
    pub accept_rate: f64,
    /// Rejected checks of the first verifier.
    pub rejected_checks: usize,
    pub checks: usize,
    /// The sequential decision on the state checks against this pairing's calibration (None:
    /// not calibrated yet).
    pub decision: Option<SequentialDecision>,
    pub tokens_needed: Option<usize>,
    /// Tokens up to the first token the sampling rule rejects (docs/sampling.md), if one is.
    #[serde(default)]
    pub token_rejected_at: Option<usize>,
    /// The trial is rejected: the sequential test decided "cheat" or a token check failed
    /// (None: not calibrated yet).
    #[serde(default)]
    pub rejected: Option<bool>,
    /// Tokens the rejection needed: the earlier of the two.
    #[serde(default)]
    pub tokens_to_rejection: Option<usize>,
    /// The verdict the old cutoff rule gave.
    pub cutoff_reject: bool,
    /// The trial-level test (None: not calibrated yet).
    pub trial_level: Option<TrialLevelOutcome>,
}

/// A pairing's calibration, from its control trials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairingCalibration {
    pub pairing: String,
    pub honest: HonestCounts,
    pub p0: f64,
    pub p1: f64,
    pub profile: Option<HonestProfile>,
}

/// One cell's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatrixCell {
    pub row: String,
    pub pairing: String,
    pub kind: RowKind,
    /// The cell's run folder, relative to the matrix folder.
    pub run_dir: String,
    pub trials: Vec<MatrixTrial>,
    /// Trials rejected — the sequential test decided "cheat" on the state checks, or a token
    /// check failed (the detection rate of a cheat row, the false-alarm rate of a control row),
    /// with a Clopper–Pearson interval.
    pub rejected: RateInterval,
    /// Of those, the ones the sequential test decided "cheat".
    #[serde(default)]
    pub sprt_cheat: usize,
    /// Of those, the ones a token check rejected.
    #[serde(default)]
    pub token_rejected: usize,
    /// Median tokens the rejections needed.
    pub median_tokens_to_detection: Option<usize>,
    /// Trials the trial-level test rejected.
    pub trial_level_rejected: RateInterval,
    pub trial_level_median_tokens: Option<usize>,
    /// Trials still undecided when their tokens ran out.
    pub undecided: usize,
    /// Trials the old cutoff rule rejected.
    pub cutoff_rejected: usize,
}

/// The whole matrix (matrix.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatrixReport {
    pub format_version: u32,
    pub config_file: String,
    pub started_at: u64,
    pub trials_per_cell: usize,
    pub max_new_tokens: usize,
    pub alpha: f64,
    pub beta: f64,
    pub interval_confidence: f64,
    pub rows: Vec<MatrixRow>,
    pub pairings: Vec<Pairing>,
    pub calibration: Vec<PairingCalibration>,
    pub cells: Vec<MatrixCell>,
    /// Every planned trial finished.
    pub complete: bool,
}

pub const MATRIX_FORMAT_VERSION: u32 = 1;

impl MatrixReport {
    pub fn cell(&self, row: &str, pairing: &str) -> Option<&MatrixCell> {
        self.cells
            .iter()
            .find(|c| c.row == row && c.pairing == pairing)
    }
}

/// The finished trials of each cell, keyed by (row id, pairing id).
pub type CellTrials = BTreeMap<(String, String), Vec<TrialResult>>;

/// Reads every `trial_*.json` of a cell folder (a missing folder: none yet). A file that does
/// not parse or is not consistent is an error naming it.
pub fn read_cell_trials(dir: &Path) -> Result<Vec<TrialResult>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut names: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("trial_") && n.ends_with(".json"))
        })
        .collect();
    names.sort();
    let mut trials = Vec::new();
    for path in names {
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let trial: TrialResult = serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not a trial result", path.display()))?;
        trial
            .check_consistency()
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        trials.push(trial);
    }
    Ok(trials)
}

/// Reads every cell's finished trials under the matrix folder `out`.
pub fn read_all_cells(config: &MatrixConfig, out: &Path) -> Result<CellTrials> {
    let mut all = CellTrials::new();
    for (r, p) in config.cells() {
        let (row, pairing) = (&config.rows[r], &config.pairings[p]);
        let trials = read_cell_trials(&cell_dir(out, &row.id, &pairing.id))?;
        all.insert((row.id.clone(), pairing.id.clone()), trials);
    }
    Ok(all)
}

fn honest_counts(trials: &[&TrialResult], source: &str) -> HonestCounts {
    let mut counts = HonestCounts {
        rejected: 0,
        checks: 0,
        trials: 0,
        source: source.to_string(),
    };
    for t in trials {
        if let Some(v) = t.verifiers.first() {
            counts.checks += v.statistics.checks.len();
            counts.rejected += v.statistics.checks.iter().filter(|c| !c.accept).count();
            counts.trials += 1;
        }
    }
    counts
}

fn trial_token_values(t: &TrialResult) -> Vec<f64> {
    t.verifiers.first().map_or_else(Vec::new, |v| {
        token_values(
            v.statistics
                .checks
                .iter()
                .map(|c| (c.position, c.metrics.rel_l2)),
        )
    })
}

/// Judges every finished trial and sums up the cells.
pub fn aggregate(
    config: &MatrixConfig,
    config_file: &str,
    started_at: u64,
    cells: &CellTrials,
) -> MatrixReport {
    let settings = config.decision_settings();
    let empty = Vec::new();
    let trials_of = |row: &str, pairing: &str| {
        cells
            .get(&(row.to_string(), pairing.to_string()))
            .unwrap_or(&empty)
    };
    let mut calibration = Vec::new();
    let mut out_cells = Vec::new();
    for pairing in &config.pairings {
        // (row id, trial) of every control trial of the pairing.
        let controls: Vec<(&str, &TrialResult)> = config
            .rows
            .iter()
            .filter(|r| r.kind == RowKind::Control)
            .flat_map(|r| {
                trials_of(&r.id, &pairing.id)
                    .iter()
                    .map(move |t| (r.id.as_str(), t))
            })
            .collect();
        let source = format!("matrix control trials of pairing {}", pairing.id);
        let all_controls: Vec<&TrialResult> = controls.iter().map(|(_, t)| *t).collect();
        let counts = honest_counts(&all_controls, &source);
        let values: Vec<Vec<f64>> = all_controls.iter().map(|t| trial_token_values(t)).collect();
        let profile = HonestProfile::calibrate(&values);
        if let Ok(sprt) = crate::stats::sequential::Sprt::calibrated(
            counts.rejected,
            counts.checks,
            settings.p1,
            settings.alpha,
            settings.beta,
        ) {
            calibration.push(PairingCalibration {
                pairing: pairing.id.clone(),
                honest: counts.clone(),
                p0: sprt.p0,
                p1: sprt.p1,
                profile,
            });
        }
        for row in &config.rows {
            let trials = trials_of(&row.id, &pairing.id);
            let judged: Vec<MatrixTrial> = trials
                .iter()
                .map(|t| {
                    // Leave one out: a control trial is not part of its own calibration.
                    let others: Vec<&TrialResult> = controls
                        .iter()
                        .filter(|(r, c)| {
                            !(row.kind == RowKind::Control && *r == row.id && c.trial == t.trial)
                        })
                        .map(|(_, c)| *c)
                        .collect();
                    judge_trial(t, &others, &source, &settings)
                })
                .collect();
            out_cells.push(summarize_cell(row, pairing, judged));
        }
    }
    let planned = config.cells().len() * config.trials;
    let done: usize = out_cells.iter().map(|c| c.trials.len()).sum();
    MatrixReport {
        format_version: MATRIX_FORMAT_VERSION,
        config_file: config_file.to_string(),
        started_at,
        trials_per_cell: config.trials,
        max_new_tokens: config.max_new_tokens,
        alpha: settings.alpha,
        beta: settings.beta,
        interval_confidence: INTERVAL_CONFIDENCE,
        rows: config.rows.clone(),
        pairings: config.pairings.clone(),
        calibration,
        cells: out_cells,
        complete: done >= planned,
    }
}

fn judge_trial(
    t: &TrialResult,
    calibration: &[&TrialResult],
    source: &str,
    settings: &DecisionSettings,
) -> MatrixTrial {
    let counts = honest_counts(calibration, source);
    let cutoff_verdict = t
        .decision
        .as_ref()
        .map_or(t.summary.final_verdict, |d| d.cutoff_verdict);
    let mut judged = t.clone();
    let decided = counts.checks > 0
        && decide_with(&mut judged, settings, |_| {
            Some((source.to_string(), counts.clone()))
        });
    let record = judged.decision.as_ref().filter(|_| decided);
    let values: Vec<Vec<f64>> = calibration.iter().map(|c| trial_token_values(c)).collect();
    let trial_level = HonestProfile::calibrate(&values)
        .and_then(|profile| test_trial(&profile, &trial_token_values(t), settings.alpha));
    let first = t.verifiers.first();
    // A token check failing is a rejection of its own (exact replay with tolerance δ).
    let token_rejected_at = first
        .and_then(|v| v.token_checks.as_ref())
        .filter(|tc| !tc.pass)
        .map(|tc| {
            tc.first_rejected_position
                .map_or(t.inference.generated_tokens, |p| p + 1)
        });
    let sprt_cheat = record
        .filter(|r| r.decision == SequentialDecision::Cheat)
        .and_then(|r| r.tokens_needed);
    let rejected =
        record.map(|r| r.decision == SequentialDecision::Cheat || token_rejected_at.is_some());
    let tokens_to_rejection = match (sprt_cheat, token_rejected_at) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    MatrixTrial {
        token_rejected_at,
        rejected,
        tokens_to_rejection,
        trial: t.trial,
        prompt: t.prompt.id.clone(),
        generated_tokens: t.inference.generated_tokens,
        accept_rate: t.summary.avg_accept_rate,
        rejected_checks: first.map_or(0, |v| {
            v.statistics.checks.iter().filter(|c| !c.accept).count()
        }),
        checks: first.map_or(0, |v| v.statistics.checks.len()),
        decision: record.map(|r| r.decision),
        tokens_needed: record.and_then(|r| r.tokens_needed),
        cutoff_reject: cutoff_verdict == crate::record::results::TrialVerdict::Reject,
        trial_level,
    }
}

fn median(mut v: Vec<usize>) -> Option<usize> {
    v.sort_unstable();
    (!v.is_empty()).then(|| v[v.len() / 2])
}

fn summarize_cell(row: &MatrixRow, pairing: &Pairing, trials: Vec<MatrixTrial>) -> MatrixCell {
    let decided: Vec<&MatrixTrial> = trials.iter().filter(|t| t.decision.is_some()).collect();
    let cheats: Vec<&MatrixTrial> = decided
        .iter()
        .copied()
        .filter(|t| t.rejected == Some(true))
        .collect();
    let level: Vec<&TrialLevelOutcome> = trials
        .iter()
        .filter_map(|t| t.trial_level.as_ref())
        .collect();
    let level_rejects: Vec<&&TrialLevelOutcome> = level.iter().filter(|o| o.reject).collect();
    MatrixCell {
        row: row.id.clone(),
        pairing: pairing.id.clone(),
        kind: row.kind,
        run_dir: format!("{}/{}", row.id, pairing.id),
        rejected: clopper_pearson(cheats.len(), decided.len(), INTERVAL_CONFIDENCE),
        sprt_cheat: decided
            .iter()
            .filter(|t| t.decision == Some(SequentialDecision::Cheat))
            .count(),
        token_rejected: decided
            .iter()
            .filter(|t| t.token_rejected_at.is_some())
            .count(),
        median_tokens_to_detection: median(
            cheats
                .iter()
                .filter_map(|t| t.tokens_to_rejection)
                .collect(),
        ),
        trial_level_rejected: clopper_pearson(
            level_rejects.len(),
            level.len(),
            INTERVAL_CONFIDENCE,
        ),
        trial_level_median_tokens: median(
            level_rejects
                .iter()
                .filter_map(|o| o.tokens_needed)
                .collect(),
        ),
        undecided: decided
            .iter()
            .filter(|t| t.decision == Some(SequentialDecision::Undecided))
            .count(),
        cutoff_rejected: trials.iter().filter(|t| t.cutoff_reject).count(),
        trials,
    }
}

#[cfg(test)]
#[path = "matrix_tests.rs"]
mod tests;
