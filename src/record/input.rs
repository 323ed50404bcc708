//! Reading the JSON files the figures are made from: trial results, run summaries (with the
//! trial files they list) and optimization reports, told apart by their fields.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::de::DeserializeOwned;
use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::record::results::{RunSummary, TrialResult};
use crate::stats::optimize::OptimizationReport;

/// Larger inputs are refused rather than read into memory (a trial with every check of a
/// long generation is a few MiB; this leaves ample room).
pub const MAX_INPUT_BYTES: u64 = 256 * 1024 * 1024;

/// All the trial files one run summary lists, together: a small summary that lists a big
/// file many times must not multiply memory.
pub const MAX_SUMMARY_TOTAL_BYTES: u64 = 4 * MAX_INPUT_BYTES;

/// One input file, parsed.
#[derive(Debug, Clone)]
pub enum PlotInput {
    Trial {
        path: PathBuf,
        trial: Box<TrialResult>,
    },
    /// A run summary with the trials it lists (path of each, resolved).
    Summary {
        path: PathBuf,
        summary: Box<RunSummary>,
        trials: Vec<(PathBuf, TrialResult)>,
    },
    Report {
        path: PathBuf,
        report: Box<OptimizationReport>,
    },
}

/// What kind of file a JSON document is, judged by fields only that kind has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InputKind {
    Trial,
    Summary,
    Report,
}

/// The fields that tell the kinds apart, read without building the document in memory (a
/// `serde_json::Value` of a 256 MiB file took 17 times that).
#[derive(Deserialize)]
struct KindProbe {
    trial_files: Option<IgnoredAny>,
    aggregate: Option<IgnoredAny>,
    verifiers: Option<IgnoredAny>,
    inference: Option<IgnoredAny>,
    trial: Option<IgnoredAny>,
    metrics: Option<IgnoredAny>,
    accept_rates: Option<IgnoredAny>,
}

fn kind_of(probe: &KindProbe) -> Option<InputKind> {
    if probe.trial_files.is_some() && probe.aggregate.is_some() {
        Some(InputKind::Summary)
    } else if probe.verifiers.is_some() && probe.inference.is_some() && probe.trial.is_some() {
        Some(InputKind::Trial)
    } else if probe.metrics.is_some() && probe.accept_rates.is_some() {
        Some(InputKind::Report)
    } else {
        None
    }
}

/// A JSON input file's bytes, with its kind.
struct JsonInput {
    bytes: Vec<u8>,
    kind: Option<InputKind>,
}

/// Reads a JSON file, refusing files over [`MAX_INPUT_BYTES`] and anything that is not a
/// regular file, and tells what kind of document it is.
fn read_json(path: &Path) -> anyhow::Result<JsonInput> {
    let bytes = crate::util::read_regular_file(path, MAX_INPUT_BYTES)?;
    serde_json::from_slice::<IgnoredAny>(&bytes)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    // Valid JSON that is no object (an array, say) is of no kind.
    let kind = serde_json::from_slice::<KindProbe>(&bytes)
        .ok()
        .and_then(|probe| kind_of(&probe));
    Ok(JsonInput { bytes, kind })
}

fn parse_as<T: DeserializeOwned>(path: &Path, bytes: &[u8], what: &str) -> anyhow::Result<T> {
    serde_json::from_slice(bytes).with_context(|| {
        format!(
            "{}: looks like {what} but does not match its format",
            path.display()
        )
    })
}

/// The trial file a run summary lists, resolved against the summary's directory. Absolute
/// paths, `..` and links that lead out of that directory are refused, so a summary cannot
/// make the plotter read arbitrary files.
pub fn resolve_trial_file(summary_path: &Path, listed: &str) -> anyhow::Result<PathBuf> {
    let relative = Path::new(listed);
    if !crate::util::is_inner_relative_path(listed) {
        bail!(
            "{}: trial file {listed:?} must be a relative path inside the summary's directory",
            summary_path.display()
        );
    }
    let directory = summary_path.parent().unwrap_or(Path::new("."));
    let directory = if directory.as_os_str().is_empty() {
        Path::new(".")
    } else {
        directory
    };
    let joined = directory.join(relative);
    let resolved = joined.canonicalize().with_context(|| {
        format!(
            "{}: trial file {listed:?} ({}) cannot be found",
            summary_path.display(),
            joined.display()
        )
    })?;
    let canonical_directory = directory
        .canonicalize()
        .with_context(|| format!("{}: cannot resolve its directory", summary_path.display()))?;
    if !resolved.starts_with(&canonical_directory) {
        bail!(
            "{}: trial file {listed:?} leads outside the summary's directory (to {})",
            summary_path.display(),
            resolved.display()
        );
    }
    Ok(resolved)
}

/// A trial result, checked for consistency before anything is sized or drawn by it (a file
/// may come from another machine).
fn load_trial(path: &Path, bytes: &[u8]) -> anyhow::Result<TrialResult> {
    let trial: TrialResult = parse_as(path, bytes, "a trial result")?;
    trial
        .check_consistency()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(trial)
}

/// Reads and parses one input file, with the trial files of a run summary.
pub fn load_input(path: &Path) -> anyhow::Result<PlotInput> {
    let input = read_json(path)?;
    match input.kind {
        Some(InputKind::Trial) => Ok(PlotInput::Trial {
            path: path.to_path_buf(),
            trial: Box::new(load_trial(path, &input.bytes)?),
        }),
        Some(InputKind::Summary) => {
            let summary: RunSummary = parse_as(path, &input.bytes, "a run summary")?;
            // A summary lists each of its trials once: counts that disagree or a file listed
            // twice would double-count verdicts (and multiply memory).
            summary
                .check_consistency()
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let mut trials: Vec<(PathBuf, TrialResult)> = Vec::new();
            let mut seen_paths: std::collections::HashSet<PathBuf> = Default::default();
            let mut seen_numbers: std::collections::HashSet<usize> = Default::default();
            let mut total_bytes = 0u64;
            for listed in &summary.trial_files {
                let trial_path = resolve_trial_file(path, listed)?;
                if !seen_paths.insert(trial_path.clone()) {
                    bail!(
                        "{}: trial file {listed:?} is listed more than once",
                        path.display()
                    );
                }
                let trial_input = read_json(&trial_path)
                    .with_context(|| format!("{}: trial file {listed:?}", path.display()))?;
                total_bytes += trial_input.bytes.len() as u64;
                if total_bytes > MAX_SUMMARY_TOTAL_BYTES {
                    bail!(
                        "{}: its trial files exceed {MAX_SUMMARY_TOTAL_BYTES} bytes together",
                        path.display()
                    );
                }
                if trial_input.kind != Some(InputKind::Trial) {
                    bail!(
                        "{}: trial file {listed:?} is not a trial result",
                        path.display()
                    );
                }
                let trial = load_trial(&trial_path, &trial_input.bytes)?;
                // Copies or links of one trial under other names would count it twice.
                if !seen_numbers.insert(trial.trial) {
                    bail!(
                        "{}: trial file {listed:?} repeats trial {} of another listed file",
                        path.display(),
                        trial.trial
                    );
                }
                trials.push((trial_path, trial));
            }
            Ok(PlotInput::Summary {
                path: path.to_path_buf(),
                summary: Box::new(summary),
                trials,
            })
        }
        Some(InputKind::Report) => Ok(PlotInput::Report {
            path: path.to_path_buf(),
            report: Box::new(parse_as(path, &input.bytes, "an optimization report")?),
        }),
        None => bail!(
            "{}: not a trial result (fields verifiers, inference, trial), run summary \
             (trial_files, aggregate) or optimization report (metrics, accept_rates)",
            path.display()
        ),
    }
}
