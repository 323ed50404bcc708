//! The result files an experiment run writes (one per trial plus one summary per run). Field
//! names follow the reference VeriLLM project so that existing `jq` pipelines keep working:
//! trial `verifiers[].statistics.summary.accept_rate`, `verifiers[].overhead.percentage`,
//! `summary.avg_accept_rate`, `summary.final_verdict`; run summary `aggregate.avg_accept_rate`,
//! `aggregate.avg_overhead_percentage`, `aggregate.pass_rate`.

use std::borrow::Borrow;

use serde::{Deserialize, Serialize};

use super::limits::{MAX_MODEL_LAYERS, MAX_TRIALS, MAX_VERIFIERS};
use crate::stats::metrics::{float_serde, CheckMetrics};
use crate::stats::policy::TierThresholds;
use crate::stats::sequential::{SequentialDecision, Sprt, SprtOutcome};

pub const RESULT_FORMAT_VERSION: u32 = 1;

/// Who computed something: model, precision (`full`, `q4_0`, …, `native`), device profile and
/// the dtype the computation actually ran in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleSpec {
    pub model: String,
    pub precision: String,
    pub device: String,
    pub dtype: String,
}

/// A verifier's verdict: decided by the acceptance policy, where it is defined.
pub use crate::stats::policy::Verdict;

/// Verdict of a trial (all its verifiers together) and what an experiment expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrialVerdict {
    #[serde(rename = "PASS")]
    Pass,
    #[serde(rename = "REJECT")]
    Reject,
}

impl TrialVerdict {
    /// A trial passes when a majority of its verifiers pass.
    pub fn of_verifiers(verdicts: impl IntoIterator<Item = Verdict>) -> TrialVerdict {
        let (mut passes, mut count) = (0usize, 0usize);
        for verdict in verdicts {
            count += 1;
            passes += usize::from(verdict.is_pass());
        }
        if passes * 2 > count {
            TrialVerdict::Pass
        } else {
            TrialVerdict::Reject
        }
    }

    pub fn is_pass(self) -> bool {
        self == TrialVerdict::Pass
    }
}

impl std::fmt::Display for TrialVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so that widths in format strings apply (report tables).
        f.pad(match self {
            TrialVerdict::Pass => "PASS",
            TrialVerdict::Reject => "REJECT",
        })
    }
}

/// One (generated position, sampled layer) comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckRecord {
    /// Index among the generated tokens (0 = first generated token).
    pub position: usize,
    /// Hidden-state index (Hugging Face convention: l = residual stream entering layer l).
    pub layer: usize,
    pub accept: bool,
    #[serde(flatten)]
    pub metrics: CheckMetrics,
}

/// One generated token held to the sampling rule at its step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenCheckRecord {
    /// Index among the generated tokens.
    pub position: usize,
    pub token: u32,
    /// Among the candidates (not banned, inside top-k/top-p) of the verifier's logits.
    pub in_set: bool,
    /// Its perturbed score minus the best other candidate's, in logit units (docs/sampling.md);
    /// +inf when it was the only candidate; −inf outside the set, unless it lies within the
    /// tolerance of the top-k/top-p boundary ("Tokens at the boundary"), where it is finite.
    #[serde(with = "float_serde")]
    pub margin: f64,
    pub accept: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifierSummary {
    pub accept_rate: f64,
    pub accepted: usize,
    pub total_checks: usize,
    // A check with a NaN or infinite element makes these non-finite, which plain serde_json
    // writes as `null` and then refuses to read back: they use the checks' "inf"/"nan" encoding.
    #[serde(with = "float_serde")]
    pub mean_rel_l2: f64,
    #[serde(with = "float_serde")]
    pub max_rel_l2: f64,
    #[serde(with = "float_serde")]
    pub mean_pe: f64,
    #[serde(with = "float_serde")]
    pub mean_abs: f64,
    #[serde(with = "float_serde")]
    pub max_abs: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifierStatistics {
    pub summary: VerifierSummary,
    /// Every check that counts toward the accept rate.
    pub checks: Vec<CheckRecord>,
    /// Layer-0 (token embedding) checks, identical by construction, reported apart.
    #[serde(default)]
    pub embedding_checks: Vec<CheckRecord>,
    /// Every generated token held to the sampling rule (empty for a state-only verification
    /// and in files written before token checks existed).
    #[serde(default)]
    pub token_checks: Vec<TokenCheckRecord>,
}

/// The token checks of one verifier (docs/sampling.md, docs/policy.md "Token checks").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenCheckSummary {
    pub count: usize,
    pub accepted: usize,
    pub accept_rate: f64,
    /// The smallest margin in logit units (−inf: a token outside the candidate set).
    #[serde(with = "float_serde")]
    pub min_margin: f64,
    pub first_rejected_position: Option<usize>,
    /// δ of the tier: accepted when margin ≥ −δ.
    pub tolerance: f64,
    /// How the output breaks the stopping rule, if it does (always a rejection).
    pub stop_violation: Option<String>,
    /// Every token accepted and the stop rule kept.
    pub pass: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Overhead {
    pub verification_time_s: f64,
    pub inference_time_s: f64,
    /// verification_time / inference_time × 100.
    pub percentage: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifierResult {
    pub name: String,
    pub role: RoleSpec,
    pub policy: String,
    /// The precision tier its checks were judged in ("f32", "f16", "bf16"); absent from files
    /// written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// The per-check limits applied in that tier (precision-aware policy; absent for the seed
    /// rule and from older files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<TierThresholds>,
    pub cutoff: f64,
    pub statistics: VerifierStatistics,
    /// Token checks (absent for a state-only verification and from older files). The verdict
    /// is PASS only when the state checks pass the cutoff and these pass too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_checks: Option<TokenCheckSummary>,
    pub overhead: Overhead,
    pub verdict: Verdict,
    /// False when the run was cancelled before this verifier finished, or it had no checks.
    pub complete: bool,
    /// Segment mode only (docs/commitment.md): the challenge and what it proved; absent from
    /// full-mode files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<super::segment_result::SegmentRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptInfo {
    pub category: String,
    pub id: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferenceInfo {
    pub role: RoleSpec,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// Prefill + decode, seconds.
    pub time_s: f64,
    /// Generated tokens per second of `time_s` (prefill included).
    pub tokens_per_s: f64,
    /// The decode loop alone, seconds (absent from files written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_s: Option<f64>,
    pub output_text: String,
    pub output_ids: Vec<u32>,
    /// Bytes taken by the captured hidden states.
    pub captured_bytes: usize,
}

impl InferenceInfo {
    /// Generated tokens per second of the decode loop, the figure `bench` calls decode tok/s;
    /// `None` when the file does not record the decode time.
    pub fn decode_tokens_per_s(&self) -> Option<f64> {
        self.decode_s
            .filter(|s| *s > 0.0)
            .map(|s| self.generated_tokens as f64 / s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialSummary {
    pub avg_accept_rate: f64,
    pub final_verdict: TrialVerdict,
    pub expected_verdict: TrialVerdict,
    pub expectation_held: bool,
    /// Cheat scenarios only: the cheat was detected (final verdict REJECT).
    pub detected: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialResult {
    pub format_version: u32,
    pub experiment: String,
    pub trial: usize,
    /// Unix seconds.
    pub started_at: u64,
    /// How the roles were actually paired (e.g. "cross-precision on cpu: bf16 -> f32").
    pub pairing: String,
    pub prompt: PromptInfo,
    pub sampled_layers: Vec<usize>,
    pub inference: InferenceInfo,
    pub verifiers: Vec<VerifierResult>,
    pub summary: TrialSummary,
    /// False when the run was cancelled before the trial finished.
    pub complete: bool,
    /// Whether the bundle was held to the request (prompt ids, sampling, seed, limits, model,
    /// nonce where known) rather than taken at its word: false for `verify` without
    /// `--request` and in files written before requests existed.
    #[serde(default)]
    pub request_checked: bool,
    /// The sequential test's decision (stated α/β) and the cutoff rule's verdict beside it;
    /// absent where the pairing's tier has no calibration and from older files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<DecisionRecord>,
}

impl RunSummary {
    /// Whether a summary (a file that may come from elsewhere) is one this build wrote: its
    /// format, as many distinct trial files as trials, no more than a run can have, and
    /// verifiers within bound. Checked before anything is sized by it.
    pub fn check_consistency(&self) -> Result<(), String> {
        check_format_and_verifiers(self.format_version, self.verifiers.len())?;
        let max_trials = MAX_TRIALS;
        if self.trials > max_trials || self.trial_files.len() != self.trials {
            return Err(format!(
                "lists {} trial files but says trials: {} (at most {max_trials})",
                self.trial_files.len(),
                self.trials
            ));
        }
        let distinct: std::collections::HashSet<&String> = self.trial_files.iter().collect();
        if distinct.len() != self.trial_files.len() {
            return Err("lists a trial file more than once".into());
        }
        Ok(())
    }
}

/// What summaries and trial files share: this build's format, and verifiers within bound.
fn check_format_and_verifiers(format_version: u32, verifiers: usize) -> Result<(), String> {
    if format_version != RESULT_FORMAT_VERSION {
        return Err(format!(
            "format_version {format_version} is not {RESULT_FORMAT_VERSION}, the one this build \
             reads"
        ));
    }
    if verifiers > MAX_VERIFIERS {
        return Err(format!(
            "{verifiers} verifiers, more than the {MAX_VERIFIERS} a trial may have"
        ));
    }
    Ok(())
}

impl TrialResult {
    /// Whether the file's parts agree with one another as this program writes them: every
    /// check at a generated position and at a sampled layer (embeddings at layer 0), the ids
    /// as many as the tokens. A file from elsewhere is checked before anything is sized by its
    /// numbers (a check at position 10^12 would otherwise size a heatmap).
    pub fn check_consistency(&self) -> Result<(), String> {
        check_format_and_verifiers(self.format_version, self.verifiers.len())?;
        let tokens = self.inference.generated_tokens;
        if self.inference.output_ids.len() != tokens {
            return Err(format!(
                "inference.generated_tokens is {tokens} but inference.output_ids holds {}",
                self.inference.output_ids.len()
            ));
        }
        if self.sampled_layers.len() > MAX_MODEL_LAYERS {
            return Err(format!(
                "{} sampled layers, more than any transformer has",
                self.sampled_layers.len()
            ));
        }
        if !self.sampled_layers.windows(2).all(|w| w[0] < w[1]) {
            return Err(format!(
                "sampled_layers {:?} are not ascending and distinct",
                self.sampled_layers
            ));
        }
        for (index, verifier) in self.verifiers.iter().enumerate() {
            let stats = &verifier.statistics;
            for (n, check) in stats.token_checks.iter().enumerate() {
                if check.position >= tokens {
                    return Err(format!(
                        "verifiers[{index}].statistics.token_checks[{n}]: position {} is beyond \
                         the {tokens} generated tokens",
                        check.position
                    ));
                }
            }
            for (list, checks) in [
                ("checks", &stats.checks),
                ("embedding_checks", &stats.embedding_checks),
            ] {
                for (n, check) in checks.iter().enumerate() {
                    let at = || format!("verifiers[{index}].statistics.{list}[{n}]");
                    if check.position >= tokens {
                        return Err(format!(
                            "{}: position {} is beyond the {tokens} generated tokens",
                            at(),
                            check.position
                        ));
                    }
                    let layer_ok = if list == "checks" {
                        self.sampled_layers.binary_search(&check.layer).is_ok()
                    } else {
                        check.layer == 0
                    };
                    if !layer_ok {
                        return Err(format!(
                            "{}: layer {} is not among the sampled layers {:?}",
                            at(),
                            check.layer,
                            self.sampled_layers
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    pub avg_accept_rate: f64,
    pub avg_overhead_percentage: f64,
    /// Fraction of trials whose final verdict is PASS.
    pub pass_rate: f64,
    /// Cheat scenarios only: fraction of trials whose final verdict is REJECT.
    pub detection_rate: Option<f64>,
    /// Fraction of trials whose verdict matched the expectation.
    pub expectation_rate: f64,
}

impl Aggregate {
    /// The run aggregates over the trials that finished (`None` before the first): the one
    /// place they are computed, for `summary.json` and for the console's results list alike.
    pub fn of_trials<T: std::borrow::Borrow<TrialResult>>(
        trials: &[T],
        expected: TrialVerdict,
    ) -> Option<Aggregate> {
        let trials: Vec<&TrialResult> = trials.iter().map(Borrow::borrow).collect();
        if trials.is_empty() {
            return None;
        }
        let n = trials.len() as f64;
        let overheads: Vec<f64> = trials
            .iter()
            .flat_map(|t| t.verifiers.iter().map(|v| v.overhead.percentage))
            .collect();
        let passes = trials
            .iter()
            .filter(|t| t.summary.final_verdict == TrialVerdict::Pass)
            .count() as f64;
        Some(Aggregate {
            avg_accept_rate: trials
                .iter()
                .map(|t| t.summary.avg_accept_rate)
                .sum::<f64>()
                / n,
            avg_overhead_percentage: overheads.iter().sum::<f64>() / overheads.len().max(1) as f64,
            pass_rate: passes / n,
            detection_rate: (expected == TrialVerdict::Reject).then_some(1.0 - passes / n),
            expectation_rate: trials.iter().filter(|t| t.summary.expectation_held).count() as f64
                / n,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub format_version: u32,
    pub experiment: String,
    pub description: String,
    pub started_at: u64,
    pub pairing: String,
    pub inference: RoleSpec,
    pub verifiers: Vec<RoleSpec>,
    pub cutoff: f64,
    pub expected_verdict: TrialVerdict,
    /// Trials that finished (one result file each).
    pub trials: usize,
    /// Trials the run set out to make (absent from files written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_trials: Option<usize>,
    /// Trials run side by side (`run --jobs`): above 1 they shared the CPU, so their speeds and
    /// overheads are not clean measurements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<usize>,
    /// Trial result files, relative to the summary's directory.
    pub trial_files: Vec<String>,
    pub aggregate: Aggregate,
    pub complete: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files an earlier build wrote (tests/fixtures/results_format, see its README) read into
    /// these types and written back as the runner writes them: the same bytes, every field kept.
    #[test]
    fn verdicts_read_as_the_files_write_them_and_a_majority_passes_a_trial() {
        use Verdict::{Fail, Pass};
        assert_eq!(
            TrialVerdict::of_verifiers([Pass, Pass, Fail]),
            TrialVerdict::Pass
        );
        assert_eq!(
            TrialVerdict::of_verifiers([Pass, Fail]),
            TrialVerdict::Reject
        );
        assert_eq!(TrialVerdict::of_verifiers([]), TrialVerdict::Reject);
        assert_eq!(TrialVerdict::Reject.to_string(), "REJECT");
        assert_eq!(
            serde_json::to_string(&TrialVerdict::Reject).unwrap(),
            "\"REJECT\""
        );
        assert_eq!(serde_json::to_string(&Fail).unwrap(), "\"FAIL\"");
    }

    #[test]
    fn result_files_from_an_earlier_build_are_written_back_byte_for_byte() {
        let dir = crate::testutil::fixtures_dir().join("results_format");
        let trial_bytes = std::fs::read(dir.join("trial_000.json")).unwrap();
        let trial: TrialResult = serde_json::from_slice(&trial_bytes).unwrap();
        trial.check_consistency().unwrap();
        assert!(!trial.verifiers[0].statistics.token_checks.is_empty());
        assert!(trial.verifiers[0].limits.is_some());
        assert_eq!(serde_json::to_vec_pretty(&trial).unwrap(), trial_bytes);
        let summary_bytes = std::fs::read(dir.join("summary.json")).unwrap();
        let summary: RunSummary = serde_json::from_slice(&summary_bytes).unwrap();
        summary.check_consistency().unwrap();
        assert_eq!(serde_json::to_vec_pretty(&summary).unwrap(), summary_bytes);
    }
}

// The sequential test's decision (stats::sequential; docs/policy.md "Verdicts with error
// rates"), recorded beside the cutoff rule's verdict.
/// One verifier's sequential test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifierDecision {
    pub name: String,
    /// The calibration it was judged against (a tier such as `bf16`, or a matrix pairing).
    pub calibrated_on: String,
    pub sprt: Sprt,
    pub outcome: SprtOutcome,
    /// What the old cutoff rule said (with the token checks, as before).
    pub cutoff_verdict: Verdict,
}

/// The trial's decision, recorded in its result file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// Always `sprt` for now: the rule that set `final_verdict`.
    pub rule: String,
    pub alpha: f64,
    pub beta: f64,
    /// The majority of the verifiers' decisions (undecided when there is none).
    pub decision: SequentialDecision,
    /// Tokens the deciding verifiers needed (their median); None when undecided.
    pub tokens_needed: Option<usize>,
    /// The trial verdict the cutoff rule gave.
    pub cutoff_verdict: TrialVerdict,
    pub verifiers: Vec<VerifierDecision>,
}
