//! The trial-level test: a cheat whose every check stays under the per-check threshold can still
//! move the *average* drift of a trial (8-bit weights in bf16: per-check rel L2 within the honest
//! spread, mean about 1.7× the honest mean, issue 18). This test compares a trial's mean
//! log10 rel L2 per generated token with the calibrated honest distribution of its pairing,
//! one-sided at α.
//!
//! Calibration (honest trials of the pairing) gives the mean μ0 and spread σ0 of per-token values
//! (a token's value: the mean log10 rel L2 of its checks) and the spread s_b of whole-trial
//! means. Tokens of one trial are not independent (one prompt, one context): a trial mean of n
//! tokens varies by b² + σ0²/n, where b² = s_b² − σ0²/n̄ is the between-trial part (n̄ the
//! calibration trials' mean length). The threshold is a one-sided prediction bound,
//! μ0 + t(1−α; k−1)·√((b² + σ0²/n)(1 + 1/k)) for k calibration trials: few calibration trials
//! give a wide bound (k = 4 at α = 1e-3: t = 10.2), never an understated false-alarm rate. The
//! tokens needed are the fewest n at which the trial's observed excess would reach the bound
//! (None when b alone keeps it out of reach: more tokens cannot help then).

use serde::{Deserialize, Serialize};

use super::intervals::{normal_quantile, student_t_quantile};

/// Below this rel L2 a check counts as exact here (log10 of 0 would be −∞): a hundred times
/// below the honest f32 cross-implementation drift (about 1e-6, docs/policy.md), so exact
/// and near-exact checks of one pairing do not spread its distribution over ten decades.
const REL_L2_FLOOR: f64 = 1e-8;

/// One token's value: mean log10 rel L2 of its checks.
pub fn token_values(checks: impl IntoIterator<Item = (usize, f64)>) -> Vec<f64> {
    let mut sums: Vec<(f64, usize)> = Vec::new();
    for (position, rel_l2) in checks {
        if sums.len() <= position {
            sums.resize(position + 1, (0.0, 0));
        }
        // A non-finite check is as far from honest as a value can be: it counts at the top of
        // the scale (rel L2 1e3) instead of poisoning the mean.
        let v = if rel_l2.is_finite() {
            rel_l2.max(REL_L2_FLOOR).log10()
        } else {
            3.0
        };
        sums[position].0 += v;
        sums[position].1 += 1;
    }
    sums.into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(s, n)| s / n as f64)
        .collect()
}

/// The honest distribution of a pairing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HonestProfile {
    /// Mean of per-token values over all honest tokens.
    pub mean: f64,
    /// Their standard deviation.
    pub token_sd: f64,
    /// Standard deviation of whole-trial means (None with fewer than two honest trials).
    pub trial_mean_sd: Option<f64>,
    /// Between-trial variance b² = s_b² − σ0²/n̄ (0 when the token noise explains it all).
    pub between_var: f64,
    pub tokens: usize,
    pub trials: usize,
}

impl HonestProfile {
    /// From the per-token values of honest trials; None when no trial has a token.
    pub fn calibrate(trials: &[Vec<f64>]) -> Option<Self> {
        let all: Vec<f64> = trials.iter().flatten().copied().collect();
        if all.is_empty() {
            return None;
        }
        let (mean, token_sd) = mean_sd(&all);
        let means: Vec<f64> = trials
            .iter()
            .filter(|t| !t.is_empty())
            .map(|t| t.iter().sum::<f64>() / t.len() as f64)
            .collect();
        let trial_mean_sd = (means.len() >= 2).then(|| mean_sd(&means).1);
        let mean_len = all.len() as f64 / means.len() as f64;
        let between_var =
            trial_mean_sd.map_or(0.0, |s| (s * s - token_sd * token_sd / mean_len).max(0.0));
        Some(HonestProfile {
            mean,
            token_sd,
            trial_mean_sd,
            between_var,
            tokens: all.len(),
            trials: means.len(),
        })
    }

    /// Variance of a trial mean over `n` tokens, inflated by 1 + 1/k for the calibration's own
    /// error (a prediction bound, not a confidence bound).
    pub fn prediction_var(&self, n: usize) -> f64 {
        let k = self.trials.max(1) as f64;
        (self.between_var + self.token_sd.powi(2) / n.max(1) as f64) * (1.0 + 1.0 / k)
    }

    /// The one-sided quantile at 1 − α: Student's t on k − 1 degrees of freedom, the normal one
    /// when a single trial calibrates (no between-trial spread is known then).
    pub fn quantile(&self, alpha: f64) -> f64 {
        if self.trials >= 2 {
            student_t_quantile(1.0 - alpha, (self.trials - 1) as f64)
        } else {
            normal_quantile(1.0 - alpha)
        }
    }
}

/// What the trial-level test concluded on one trial.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrialLevelOutcome {
    /// The trial's mean per-token value (mean log10 rel L2).
    pub statistic: f64,
    /// μ0 + q(1−α)·SE at the trial's token count.
    pub threshold: f64,
    /// (statistic − μ0)/SE, SE the prediction standard error.
    pub z: f64,
    pub alpha: f64,
    pub tokens: usize,
    pub reject: bool,
    /// Fewest tokens at which this trial's mean excess would reach the threshold.
    pub tokens_needed: Option<usize>,
}

/// Tests one trial's per-token values against the honest profile at false-alarm rate `alpha`.
pub fn test_trial(
    profile: &HonestProfile,
    values: &[f64],
    alpha: f64,
) -> Option<TrialLevelOutcome> {
    if values.is_empty() {
        return None;
    }
    let n = values.len();
    let statistic = values.iter().sum::<f64>() / n as f64;
    let q = profile.quantile(alpha);
    let se = profile.prediction_var(n).sqrt().max(1e-12);
    let threshold = profile.mean + q * se;
    let excess = statistic - profile.mean;
    let inflation = 1.0 + 1.0 / profile.trials.max(1) as f64;
    // (b² + σ0²/n)(1 + 1/k)·q² ≤ excess²  ⇔  n ≥ σ0² / (excess²/(q²(1 + 1/k)) − b²).
    let room = excess * excess / (q * q * inflation) - profile.between_var;
    let tokens_needed = (excess > 0.0 && room > 0.0)
        .then(|| ((profile.token_sd.powi(2) / room).ceil() as usize).max(1));
    Some(TrialLevelOutcome {
        statistic,
        threshold,
        z: excess / se,
        alpha,
        tokens: n,
        reject: statistic > threshold,
        tokens_needed,
    })
}

fn mean_sd(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Per-token values of a synthetic trial: a trial offset (sd `between`) plus token noise.
    fn trial(rng: &mut rand::rngs::StdRng, mean: f64, between: f64, sd: f64, n: usize) -> Vec<f64> {
        let offset = between * gauss(rng);
        (0..n).map(|_| mean + offset + sd * gauss(rng)).collect()
    }

    fn gauss(rng: &mut rand::rngs::StdRng) -> f64 {
        // Box–Muller.
        let (u, v): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    #[test]
    fn honest_trials_stay_under_alpha_and_a_shifted_mean_is_caught() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        // The shape measured on bf16 → f32 (issue 18): honest mean rel L2 9.5e-3 (log10 −2.02),
        // the 8-bit cheat's 1.6e-2 (−1.80); token spread about 0.15 decades.
        let calibration: Vec<Vec<f64>> = (0..20)
            .map(|_| trial(&mut rng, -2.02, 0.03, 0.15, 48))
            .collect();
        let profile = HonestProfile::calibrate(&calibration).unwrap();
        assert_eq!((profile.trials, profile.tokens), (20, 960));
        let alpha = 0.01;
        // The bound is exact on average over calibrations: 20 calibrations × 200 honest trials.
        let mut alarms = 0;
        for _ in 0..20 {
            let calibration: Vec<Vec<f64>> = (0..20)
                .map(|_| trial(&mut rng, -2.02, 0.03, 0.15, 48))
                .collect();
            let profile = HonestProfile::calibrate(&calibration).unwrap();
            alarms += (0..200)
                .filter(|_| {
                    let t = trial(&mut rng, -2.02, 0.03, 0.15, 48);
                    test_trial(&profile, &t, alpha).unwrap().reject
                })
                .count();
        }
        let expected = 4000.0 * alpha;
        assert!(
            alarms as f64 <= expected + 5.0 * expected.sqrt() + 5.0,
            "{alarms} false alarms in 4000 honest trials at α = {alpha}"
        );
        let cheat = trial(&mut rng, -1.80, 0.03, 0.15, 48);
        let out = test_trial(&profile, &cheat, alpha).unwrap();
        assert!(out.reject, "{out:?}");
        let needed = out.tokens_needed.unwrap();
        assert!(needed <= 48, "{needed}");
        // The per-check view: every cheat token stays within the honest token range.
        let honest_max = calibration
            .iter()
            .flatten()
            .cloned()
            .fold(f64::MIN, f64::max);
        assert!(cheat.iter().filter(|v| **v > honest_max).count() < cheat.len() / 4);
    }

    #[test]
    fn token_values_average_the_layers_of_a_position() {
        let v = token_values([(0, 1e-2), (0, 1e-4), (1, 1e-3), (1, f64::NAN)]);
        assert_eq!(v.len(), 2);
        assert!((v[0] - -3.0).abs() < 1e-12);
        assert!((v[1] - 0.0).abs() < 1e-12);
        assert!(test_trial(
            &HonestProfile::calibrate(&[vec![-3.0, -3.1]]).unwrap(),
            &[],
            0.01
        )
        .is_none());
    }
}
