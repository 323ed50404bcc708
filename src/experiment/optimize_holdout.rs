//! `optimize`'s held-out validation (issue 18): the thresholds it recommends are fitted on one
//! set of trials and then applied to another, run with other sampling seeds and drawn on other
//! prompts. Held-out trials whose prompt was among the fitted ones are left out (and counted),
//! so every number here comes from prompts and seeds the fit never saw.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::record::results::{TrialResult, TrialVerdict};
use crate::stats::intervals::{clopper_pearson, RateInterval};
use crate::stats::optimize::OptimizationReport;

/// Added to each experiment's seed for its held-out trials: far from any seed a person types,
/// so the held-out sampling seeds (seed + trial) never meet the fitted ones.
pub const HELD_OUT_SEED_OFFSET: u64 = 1_000_003;

/// Error rates of the recommended per-check thresholds on held-out trials, per tier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldOutTier {
    pub tier: String,
    pub rel_l2_max: f64,
    pub pe_max: f64,
    /// Honest checks the thresholds reject (per-check false-alarm rate).
    pub honest_rejected: RateInterval,
    /// Cheat checks they accept (per-check miss rate).
    pub cheat_accepted: RateInterval,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldOutReport {
    pub seed_offset: u64,
    /// Held-out trials used.
    pub trials: usize,
    /// Held-out trials left out because their prompt was one the thresholds were fitted on.
    pub excluded_same_prompt: usize,
    pub tiers: Vec<HeldOutTier>,
}

/// Applies `report`'s tier recommendations to the checks of `held_out` trials.
pub fn validate(
    report: &OptimizationReport,
    fitted: &[TrialResult],
    held_out: &[TrialResult],
) -> HeldOutReport {
    let fitted_prompts: HashSet<(&str, &str)> = fitted
        .iter()
        .map(|t| (t.experiment.as_str(), t.prompt.id.as_str()))
        .collect();
    let (used, excluded): (Vec<&TrialResult>, Vec<&TrialResult>) = held_out
        .iter()
        .partition(|t| !fitted_prompts.contains(&(t.experiment.as_str(), t.prompt.id.as_str())));
    let tiers = report
        .tiers
        .iter()
        .map(|rec| {
            let (mut honest, mut honest_rejected, mut cheat, mut cheat_accepted) = (0, 0, 0, 0);
            for t in &used {
                let is_honest = t.summary.expected_verdict == TrialVerdict::Pass;
                for v in t
                    .verifiers
                    .iter()
                    .filter(|v| v.tier.as_deref() == Some(rec.tier.as_str()))
                {
                    for c in &v.statistics.checks {
                        // Written so that NaN rejects, as the policy does.
                        let accept =
                            c.metrics.rel_l2 <= rec.rel_l2_max && c.metrics.pe <= rec.pe_max;
                        if is_honest {
                            honest += 1;
                            honest_rejected += usize::from(!accept);
                        } else {
                            cheat += 1;
                            cheat_accepted += usize::from(accept);
                        }
                    }
                }
            }
            HeldOutTier {
                tier: rec.tier.clone(),
                rel_l2_max: rec.rel_l2_max,
                pe_max: rec.pe_max,
                honest_rejected: clopper_pearson(honest_rejected, honest, 0.95),
                cheat_accepted: clopper_pearson(cheat_accepted, cheat, 0.95),
            }
        })
        .collect();
    HeldOutReport {
        seed_offset: HELD_OUT_SEED_OFFSET,
        trials: used.len(),
        excluded_same_prompt: excluded.len(),
        tiers,
    }
}

/// The lines `optimize` prints under its table.
pub fn format_held_out(h: &HeldOutReport) -> String {
    let mut out = format!(
        "held-out validation: the thresholds above were fitted on the first trials and are \
         tested here on {} other trials (sampling seeds +{}, prompts not among the fitted ones; \
         {} held-out trials on a fitted prompt left out)\n",
        h.trials, h.seed_offset, h.excluded_same_prompt
    );
    for t in &h.tiers {
        out.push_str(&format!(
            "  {} tier (rel_l2_max {:.3e}, pe_max {:.3e}): honest checks rejected {} of {} ({}), \
             cheat checks accepted {} of {} ({})\n",
            t.tier,
            t.rel_l2_max,
            t.pe_max,
            t.honest_rejected.successes,
            t.honest_rejected.trials,
            t.honest_rejected.display(),
            t.cheat_accepted.successes,
            t.cheat_accepted.trials,
            t.cheat_accepted.display(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::optimize::TierRecommendation;

    #[test]
    fn thresholds_are_scored_on_held_out_trials_only() {
        let trial = |exp: &str, i: usize, honest: bool, prompt: &str| {
            let mut t = crate::testutil::trials::trial(exp, i, honest, &[8, 16], 10);
            t.prompt.id = prompt.into();
            t
        };
        let fitted = vec![trial("exp1", 0, true, "p1"), trial("exp3", 0, false, "p1")];
        let held_out = vec![
            trial("exp1", 1, true, "p2"),
            trial("exp3", 1, false, "p2"),
            // Same experiment and prompt as a fitted trial: left out.
            trial("exp1", 2, true, "p1"),
        ];
        let report = OptimizationReport {
            experiments: vec!["exp1".into(), "exp3".into()],
            trials: 1,
            metrics: Vec::new(),
            accept_rates: crate::stats::optimize::AcceptRateReport {
                honest: Vec::new(),
                cheat: Vec::new(),
                honest_stats: None,
                cheat_stats: None,
            },
            recommended_yaml: String::new(),
            tiers: vec![TierRecommendation {
                tier: "f32".into(),
                honest_checks: 1,
                cheat_checks: 1,
                rel_l2_max: 0.01,
                pe_max: 0.05,
            }],
        };
        let h = validate(&report, &fitted, &held_out);
        assert_eq!((h.trials, h.excluded_same_prompt), (2, 1));
        let f32 = &h.tiers[0];
        // Three verifiers × 10 positions × 2 layers per trial.
        assert_eq!(f32.honest_rejected.trials, 60);
        assert_eq!(f32.cheat_accepted.trials, 60);
        // The synthetic honest trials sit far below 0.01, the cheat ones mostly above.
        assert_eq!(f32.honest_rejected.successes, 0);
        assert!(f32.cheat_accepted.rate < 0.5);
        assert!(format_held_out(&h).contains("left out"));
    }
}
