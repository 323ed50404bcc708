//! The verdict with stated error rates (issue 18): each verifier's checks, in generation order,
//! go through Wald's SPRT (`stats::sequential`) calibrated on the measured honest per-check
//! rejection rate of the pairing's precision tier, at the experiment's α and β. A verifier
//! FAILs when the test decides "cheat" (or its token checks fail); the trial is REJECTed when a
//! majority of its verifiers fail, as before. The old cutoff rule's verdict is kept beside the
//! decision in the result file, so the two can be compared trial by trial.
//!
//! Calibration comes from `configs/calibration.yaml` (honest control runs per tier, built into
//! the binary) or, in the matrix, from the matrix's own control cells of each pairing.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::config::ExperimentSpec;
use super::workspace::Workspace;
use crate::engine::events::{EventSink, LogLevel};
use crate::record::results::{
    DecisionRecord, TrialResult, TrialVerdict, Verdict, VerifierDecision,
};
use crate::stats::sequential::{SequentialDecision, Sprt, DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_P1};

const BUILTIN_CALIBRATION: &str = include_str!("../../configs/calibration.yaml");

/// α, β and p1 of an experiment (defaults where it names none).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DecisionSettings {
    pub alpha: f64,
    pub beta: f64,
    pub p1: f64,
}

impl Default for DecisionSettings {
    fn default() -> Self {
        DecisionSettings {
            alpha: DEFAULT_ALPHA,
            beta: DEFAULT_BETA,
            p1: DEFAULT_P1,
        }
    }
}

impl DecisionSettings {
    pub fn of(spec: &ExperimentSpec) -> Self {
        let d = DecisionSettings::default();
        DecisionSettings {
            alpha: spec.alpha.unwrap_or(d.alpha),
            beta: spec.beta.unwrap_or(d.beta),
            p1: spec.p1.unwrap_or(d.p1),
        }
    }
}

/// Honest per-check rejections measured for one pairing or tier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HonestCounts {
    /// Rejected checks among `checks` (one verifier per trial: identical verifiers of one trial
    /// are copies of one measurement, not independent ones).
    pub rejected: usize,
    pub checks: usize,
    /// Honest trials they come from.
    pub trials: usize,
    /// How they were measured (the command), so a reader can redo it.
    pub source: String,
}

/// `configs/calibration.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationFile {
    /// By precision tier (`f32`, `f16`, `bf16`), as results record it.
    pub tiers: BTreeMap<String, HonestCounts>,
}

impl CalibrationFile {
    pub fn parse(text: &str, file: &str) -> anyhow::Result<Self> {
        let parsed: CalibrationFile =
            serde_yaml::from_str(text).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
        for (tier, counts) in &parsed.tiers {
            anyhow::ensure!(
                counts.checks > 0 && counts.rejected <= counts.checks,
                "{file}: tiers.{tier}: rejected {} of checks {} (expected checks ≥ 1 and \
                 rejected ≤ checks)",
                counts.rejected,
                counts.checks
            );
        }
        Ok(parsed)
    }

    /// The calibration built into the binary.
    pub fn builtin() -> &'static CalibrationFile {
        static PARSED: OnceLock<CalibrationFile> = OnceLock::new();
        PARSED.get_or_init(|| {
            CalibrationFile::parse(BUILTIN_CALIBRATION, "configs/calibration.yaml")
                .expect("the built-in calibration parses (tested)")
        })
    }
}

/// Decides `result` with the tier calibration of `calibration`; false (and the result as it
/// was) when a verifier's tier is not calibrated or a parameter is out of range.
pub fn decide(
    result: &mut TrialResult,
    settings: &DecisionSettings,
    calibration: &CalibrationFile,
) -> bool {
    decide_with(result, settings, |tier| {
        calibration
            .tiers
            .get(tier)
            .map(|c| (tier.to_string(), c.clone()))
    })
}

/// Decides `result`, each verifier calibrated by `lookup(tier)` → (name, honest counts).
pub fn decide_with(
    result: &mut TrialResult,
    settings: &DecisionSettings,
    lookup: impl Fn(&str) -> Option<(String, HonestCounts)>,
) -> bool {
    let mut decisions = Vec::new();
    for verifier in &result.verifiers {
        let Some((calibrated_on, counts)) = verifier.tier.as_deref().and_then(&lookup) else {
            return false;
        };
        let Ok(sprt) = Sprt::calibrated(
            counts.rejected,
            counts.checks,
            settings.p1,
            settings.alpha,
            settings.beta,
        ) else {
            return false;
        };
        let mut checks: Vec<(usize, usize, bool)> = verifier
            .statistics
            .checks
            .iter()
            .map(|c| (c.position, c.layer, !c.accept))
            .collect();
        checks.sort_unstable();
        let outcome = sprt.run(checks.into_iter().map(|(p, _, r)| (p, r)));
        decisions.push(VerifierDecision {
            name: verifier.name.clone(),
            calibrated_on,
            sprt,
            outcome,
            cutoff_verdict: verifier.verdict,
        });
    }
    let cutoff_verdict = result.summary.final_verdict;
    for (verifier, decision) in result.verifiers.iter_mut().zip(&decisions) {
        let tokens_pass = verifier.token_checks.as_ref().is_none_or(|t| t.pass);
        // Segment mode: the sequential test sees the checks, not the embedding rows and the
        // per-layer rule, which a cheat answering another prompt fails alone.
        let segment_pass = verifier.segment.as_ref().is_none_or(|s| s.states_pass());
        verifier.verdict = if decision.outcome.decision != SequentialDecision::Cheat
            && tokens_pass
            && segment_pass
        {
            Verdict::Pass
        } else {
            Verdict::Fail
        };
    }
    let n = result.verifiers.len();
    let passes = result
        .verifiers
        .iter()
        .filter(|v| v.verdict == Verdict::Pass)
        .count();
    let final_verdict = if passes * 2 > n {
        TrialVerdict::Pass
    } else {
        TrialVerdict::Reject
    };
    let count =
        |d: SequentialDecision| decisions.iter().filter(|v| v.outcome.decision == d).count();
    let decision = if count(SequentialDecision::Cheat) * 2 > n {
        SequentialDecision::Cheat
    } else if count(SequentialDecision::Honest) * 2 > n {
        SequentialDecision::Honest
    } else {
        SequentialDecision::Undecided
    };
    let mut tokens: Vec<usize> = decisions
        .iter()
        .filter(|v| v.outcome.decision == decision)
        .map(|v| v.outcome.tokens_used)
        .collect();
    tokens.sort_unstable();
    let tokens_needed = (decision != SequentialDecision::Undecided && !tokens.is_empty())
        .then(|| tokens[tokens.len() / 2]);
    let summary = &mut result.summary;
    summary.final_verdict = final_verdict;
    summary.expectation_held = final_verdict == summary.expected_verdict;
    if summary.detected.is_some() {
        summary.detected = Some(final_verdict == TrialVerdict::Reject);
    }
    result.decision = Some(DecisionRecord {
        rule: "sprt".into(),
        alpha: settings.alpha,
        beta: settings.beta,
        decision,
        tokens_needed,
        cutoff_verdict,
        verifiers: decisions,
    });
    true
}

/// Decides a trial of a configured experiment (α, β, p1 from its spec; defaults for a trial
/// whose experiment is not in the configuration) with the built-in tier calibration, and logs
/// the decision beside the cutoff rule's verdict.
pub fn decide_configured(ws: &Workspace, result: &mut TrialResult, sink: &EventSink) {
    let settings = ws
        .config
        .experiments
        .get(&result.experiment)
        .map(DecisionSettings::of)
        .unwrap_or_default();
    if decide(result, &settings, CalibrationFile::builtin()) {
        if let Some(record) = &result.decision {
            sink.log(
                LogLevel::Info,
                format!("trial {}: {}", result.trial, describe(record)),
            );
        }
    }
}

/// One line for logs and the console: `SPRT cheat after 4 tokens (cutoff: REJECT)`.
pub fn describe(record: &DecisionRecord) -> String {
    let cutoff = match record.cutoff_verdict {
        TrialVerdict::Pass => "PASS",
        TrialVerdict::Reject => "REJECT",
    };
    match record.tokens_needed {
        Some(t) => format!(
            "SPRT {} after {t} tokens at α={} β={} (cutoff rule: {cutoff})",
            record.decision.label(),
            record.alpha,
            record.beta
        ),
        None => format!(
            "SPRT undecided at α={} β={} (cutoff rule: {cutoff})",
            record.alpha, record.beta
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_calibration_covers_every_tier() {
        let cal = CalibrationFile::builtin();
        for tier in ["f32", "f16", "bf16"] {
            let c = &cal.tiers[tier];
            assert!(c.checks >= 1000 && c.trials >= 5, "{tier}: {c:?}");
        }
        assert!(CalibrationFile::parse(
            "tiers: {f32: {rejected: 3, checks: 2, trials: 1, source: x}}",
            "t.yaml"
        )
        .unwrap_err()
        .to_string()
        .contains("tiers.f32"));
    }

    #[test]
    fn an_honest_trial_passes_and_a_cheat_is_rejected_with_the_tokens_it_took() {
        // testutil::trials::trial: honest trials accept every check, cheat trials reject most.
        let settings = DecisionSettings::default();
        let cal = CalibrationFile::builtin();
        let mut honest = crate::testutil::trials::trial("exp1", 0, true, &[8, 16, 24], 40);
        for v in &mut honest.verifiers {
            v.tier = Some("f32".into());
        }
        assert!(decide(&mut honest, &settings, cal));
        let record = honest.decision.clone().unwrap();
        assert_eq!(record.decision, SequentialDecision::Honest);
        assert_eq!(honest.summary.final_verdict, TrialVerdict::Pass);
        assert!(record.tokens_needed.unwrap() <= 40);
        let mut cheat = crate::testutil::trials::trial("exp3", 0, false, &[8, 16, 24], 40);
        for v in &mut cheat.verifiers {
            v.tier = Some("f32".into());
        }
        let before = cheat.summary.final_verdict;
        assert!(decide(&mut cheat, &settings, cal));
        let record = cheat.decision.clone().unwrap();
        assert_eq!(record.cutoff_verdict, before);
        assert_eq!(
            record.decision,
            SequentialDecision::Cheat,
            "{}",
            describe(&record)
        );
        assert_eq!(cheat.summary.final_verdict, TrialVerdict::Reject);
        // Not calibrated: nothing changes.
        let mut unknown = crate::testutil::trials::trial("exp1", 1, true, &[8], 5);
        for v in &mut unknown.verifiers {
            v.tier = Some("f8".into());
        }
        assert!(!decide(&mut unknown, &settings, cal));
        assert!(unknown.decision.is_none());
    }

    /// `run --step verify` decides segment trials again with the sequential test: a verifier
    /// whose segment failed its embedding rows (an answer to another prompt with the same
    /// tokens, its generated positions honest for that prompt) must still fail.
    #[test]
    fn a_segment_that_failed_its_embeddings_fails_whatever_the_sequential_test_says() {
        use crate::record::segment_result::{SegmentLayerRecord, SegmentRecord};
        let segment = |embedding_rows_accepted: usize| SegmentRecord {
            root: String::new(),
            nonce: String::new(),
            secret: String::new(),
            n_layers: 30,
            challenged_layers: vec![4],
            token_positions: None,
            proofs_checked: 1,
            bytes_received: 1,
            layers: vec![SegmentLayerRecord {
                layer: 4,
                positions: 62,
                accepted: 62,
                recompute_s: 0.0,
                pass: true,
                update: None,
            }],
            embedding_rows: 62,
            embedding_rows_accepted,
            recompute_s: 0.0,
            time_s: 0.0,
            full_prefill_s: None,
            segment_to_full_prefill: None,
            layer_to_full_prefill: None,
        };
        let decided = |embedding_rows_accepted: usize| {
            let mut t = crate::testutil::trials::trial("exp1", 0, true, &[8, 16, 24], 40);
            for v in &mut t.verifiers {
                v.tier = Some("f32".into());
                v.segment = Some(segment(embedding_rows_accepted));
            }
            assert!(decide(
                &mut t,
                &DecisionSettings::default(),
                CalibrationFile::builtin()
            ));
            assert_eq!(
                t.decision.as_ref().unwrap().decision,
                SequentialDecision::Honest
            );
            t.summary.final_verdict
        };
        assert_eq!(decided(62), TrialVerdict::Pass);
        assert_eq!(decided(60), TrialVerdict::Reject);
    }
}
