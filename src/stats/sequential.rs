//! Verdicts with stated error rates: Wald's sequential probability ratio test (SPRT) over a
//! trial's checks, one Bernoulli outcome (REJECT = 1) per check, in generation order.
//!
//! H0 "honest": the per-check rejection rate is at most `p0`, the measured honest rate of the
//! pairing raised to its Clopper–Pearson upper bound (calibration). H1 "cheat": the rate is at
//! least `p1`. After each check the log-likelihood ratio moves by ln(p1/p0) on a rejection and by
//! ln((1−p1)/(1−p0)) on an acceptance. Crossing ln((1−β)/α) decides "cheat" at once. Crossing
//! Wald's lower bound ln(β/(1−α)) does *not* stop the test: a cheat's errors can start late in
//! a trial (drift that grows with position: q4_1 and q8_0 weights under the native pairing
//! reject nothing for the first tokens and then several % of checks, matrix of issue 18), and a
//! test that stopped at "honest" after the first clean tokens would never see them. The walk
//! goes on to the end of the trial; "honest" is the decision when it ends below the lower bound
//! (its tokens: where it went below for the last time), `Undecided` when it ends between.
//! Under H0 the likelihood ratio is a non-negative (super)martingale, so by Ville's inequality
//! it ever reaches 1/α' with probability ≤ α' = α/(1−β): watching every check keeps the
//! false-alarm rate within Wald's bound; the miss rate only falls (tested on synthetic streams
//! below). An undecided trial counts as honest, which can only lower the false-alarm rate.

use serde::{Deserialize, Serialize};

use super::intervals::clopper_pearson_upper;

/// Default false-alarm rate α and miss rate β (the issue's: 1e-3 each).
pub const DEFAULT_ALPHA: f64 = 1e-3;
pub const DEFAULT_BETA: f64 = 1e-3;
/// Default alternative: a cheat that makes at least one check in ten fail. Every weight cheat
/// measured so far rejects far more (q4_0: all checks; q8_0 in f32: all checks, docs/policy.md),
/// so 0.1 costs them nothing and still lets a cheat hide in no more than a tenth of the checks.
pub const DEFAULT_P1: f64 = 0.1;
/// One-sided confidence of the calibration bound on p0: the honest rate is below it with 95 %
/// confidence, so a pairing measured on few checks gets a larger (safer) p0.
pub const CALIBRATION_CONFIDENCE: f64 = 0.95;

/// What the test concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SequentialDecision {
    /// The lower bound was crossed: consistent with the honest rate.
    Honest,
    /// The upper bound was crossed: the rejection rate is the cheat's.
    Cheat,
    /// The checks ran out first.
    Undecided,
}

impl SequentialDecision {
    pub fn label(self) -> &'static str {
        match self {
            SequentialDecision::Honest => "honest",
            SequentialDecision::Cheat => "cheat",
            SequentialDecision::Undecided => "undecided",
        }
    }
}

/// A configured SPRT.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sprt {
    pub p0: f64,
    pub p1: f64,
    pub alpha: f64,
    pub beta: f64,
}

/// Where the test stopped (a cheat) or settled (honest: from this check on, the walk stayed
/// below the honest bound).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SprtOutcome {
    pub decision: SequentialDecision,
    /// Checks read when the decision was reached (all of them when undecided).
    pub checks_used: usize,
    /// Generated tokens read when the decision was reached: the position of the deciding check
    /// plus one (all tokens seen when undecided).
    pub tokens_used: usize,
    /// Rejections among the checks read.
    pub rejections: usize,
    /// The log-likelihood ratio ln L(H1)/L(H0) at the stop.
    pub llr: f64,
}

impl Sprt {
    /// Checks the parameters: 0 < p0 < p1 < 1, α and β in (0, 0.5).
    pub fn new(p0: f64, p1: f64, alpha: f64, beta: f64) -> Result<Self, String> {
        for (name, v) in [("alpha", alpha), ("beta", beta)] {
            if !(v.is_finite() && v > 0.0 && v < 0.5) {
                return Err(format!("{name} {v}: expected a rate in (0, 0.5)"));
            }
        }
        if !(p0.is_finite() && p0 > 0.0 && p0 < 1.0) {
            return Err(format!("p0 {p0}: expected a rate in (0, 1)"));
        }
        if !(p1.is_finite() && p1 > p0 && p1 < 1.0) {
            return Err(format!("p1 {p1}: expected a rate in (p0 = {p0}, 1)"));
        }
        Ok(Sprt {
            p0,
            p1,
            alpha,
            beta,
        })
    }

    /// The test for a pairing calibrated on `honest_rejections` of `honest_checks`: p0 is their
    /// one-sided Clopper–Pearson upper bound at [`CALIBRATION_CONFIDENCE`]; p1 is `p1` or, when
    /// the calibration bound reaches it, twice p0 (capped below 1) so H1 stays above H0.
    pub fn calibrated(
        honest_rejections: usize,
        honest_checks: usize,
        p1: f64,
        alpha: f64,
        beta: f64,
    ) -> Result<Self, String> {
        if honest_checks == 0 {
            return Err("no honest checks to calibrate p0 on".into());
        }
        let p0 = clopper_pearson_upper(
            honest_rejections,
            honest_checks,
            1.0 - CALIBRATION_CONFIDENCE,
        )
        .max(1e-9);
        let p1 = if p1 > p0 {
            p1
        } else {
            (2.0 * p0).min(0.5 * (p0 + 1.0))
        };
        Sprt::new(p0, p1, alpha, beta)
    }

    /// ln((1−β)/α): crossing it decides "cheat".
    pub fn upper_bound(&self) -> f64 {
        ((1.0 - self.beta) / self.alpha).ln()
    }

    /// ln(β/(1−α)): crossing it decides "honest".
    pub fn lower_bound(&self) -> f64 {
        (self.beta / (1.0 - self.alpha)).ln()
    }

    /// LLR step of one check.
    pub fn step(&self, rejected: bool) -> f64 {
        if rejected {
            (self.p1 / self.p0).ln()
        } else {
            ((1.0 - self.p1) / (1.0 - self.p0)).ln()
        }
    }

    /// Runs the test over `(position, rejected)` checks in order: it stops at the first crossing
    /// of the cheat bound, and otherwise reads every check (see the module comment).
    pub fn run<I: IntoIterator<Item = (usize, bool)>>(&self, checks: I) -> SprtOutcome {
        let (upper, lower) = (self.upper_bound(), self.lower_bound());
        let mut llr = 0.0;
        let (mut used, mut rejections, mut tokens) = (0usize, 0usize, 0usize);
        // (checks, tokens, rejections) when the walk last went below the honest bound.
        let mut below_since: Option<(usize, usize, usize)> = None;
        for (position, rejected) in checks {
            used += 1;
            rejections += usize::from(rejected);
            tokens = tokens.max(position + 1);
            llr += self.step(rejected);
            if llr >= upper {
                return SprtOutcome {
                    decision: SequentialDecision::Cheat,
                    checks_used: used,
                    tokens_used: tokens,
                    rejections,
                    llr,
                };
            }
            if llr <= lower {
                below_since.get_or_insert((used, tokens, rejections));
            } else {
                below_since = None;
            }
        }
        match below_since {
            Some((checks_used, tokens_used, rejections)) => SprtOutcome {
                decision: SequentialDecision::Honest,
                checks_used,
                tokens_used,
                rejections,
                llr,
            },
            None => SprtOutcome {
                decision: SequentialDecision::Undecided,
                checks_used: used,
                tokens_used: tokens,
                rejections,
                llr,
            },
        }
    }

    /// Fewest consecutive rejected checks that decide "cheat" from the start.
    pub fn min_checks_to_cheat(&self) -> usize {
        (self.upper_bound() / self.step(true)).ceil().max(1.0) as usize
    }

    /// Fewest consecutive accepted checks that decide "honest" from the start.
    pub fn min_checks_to_honest(&self) -> usize {
        (self.lower_bound() / self.step(false)).ceil().max(1.0) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Runs `n_trials` synthetic trials whose checks reject independently with rate `rate`
    /// (three checks per token, as `every:8` on a 30-layer model samples), `checks` per trial.
    fn simulate(
        sprt: &Sprt,
        rate: f64,
        n_trials: usize,
        checks: usize,
        seed: u64,
    ) -> Vec<SprtOutcome> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n_trials)
            .map(|_| {
                let stream: Vec<(usize, bool)> = (0..checks)
                    .map(|i| (i / 3, rng.random::<f64>() < rate))
                    .collect();
                sprt.run(stream)
            })
            .collect()
    }

    /// The largest count a Binomial(n, p) exceeds with probability below about 1e-6 (mean + 5σ,
    /// plus one for small means): the test's tolerance on a measured error count.
    fn tolerated(n: usize, p: f64) -> usize {
        let (n, p) = (n as f64, p);
        (n * p + 5.0 * (n * p * (1.0 - p)).sqrt() + 1.0).ceil() as usize
    }

    #[test]
    fn false_alarms_stay_within_alpha_at_the_honest_rate() {
        // α = 0.01 so that a few thousand trials can measure it.
        let sprt = Sprt::new(0.01, 0.1, 0.01, 0.01).unwrap();
        let n = 4000;
        let outcomes = simulate(&sprt, 0.01, n, 3000, 1);
        let alarms = outcomes
            .iter()
            .filter(|o| o.decision == SequentialDecision::Cheat)
            .count();
        let bound = sprt.alpha / (1.0 - sprt.beta);
        assert!(
            alarms <= tolerated(n, bound),
            "{alarms} false alarms in {n} trials; α bound {bound}"
        );
        // With 3000 checks the test always finishes.
        assert!(outcomes
            .iter()
            .all(|o| o.decision != SequentialDecision::Undecided));
        // Below p0 false alarms are rarer still.
        let below = simulate(&sprt, 0.002, n, 3000, 2);
        let alarms_below = below
            .iter()
            .filter(|o| o.decision == SequentialDecision::Cheat)
            .count();
        assert!(alarms_below <= alarms.max(tolerated(n, bound / 4.0)));
    }

    #[test]
    fn misses_stay_within_beta_at_the_cheat_rate() {
        let sprt = Sprt::new(0.01, 0.1, 0.01, 0.01).unwrap();
        let n = 4000;
        let outcomes = simulate(&sprt, 0.1, n, 3000, 3);
        let misses = outcomes
            .iter()
            .filter(|o| o.decision != SequentialDecision::Cheat)
            .count();
        let bound = sprt.beta / (1.0 - sprt.alpha);
        assert!(
            misses <= tolerated(n, bound),
            "{misses} misses in {n} trials; β bound {bound}"
        );
        // The defaults (α = β = 1e-3) against a blatant cheat: no misses in 2000 trials, and
        // a q4-like cheat (every check rejects) is decided by the fewest checks possible.
        let strict = Sprt::new(0.005, DEFAULT_P1, DEFAULT_ALPHA, DEFAULT_BETA).unwrap();
        let blatant = simulate(&strict, 0.5, 2000, 300, 4);
        assert!(blatant
            .iter()
            .all(|o| o.decision == SequentialDecision::Cheat));
        let all_reject = strict.run((0..30).map(|i| (i / 3, true)));
        assert_eq!(all_reject.checks_used, strict.min_checks_to_cheat());
        assert_eq!(all_reject.decision, SequentialDecision::Cheat);
    }

    #[test]
    fn the_defaults_keep_false_alarms_rare_on_a_long_honest_stream() {
        let sprt = Sprt::new(0.005, DEFAULT_P1, DEFAULT_ALPHA, DEFAULT_BETA).unwrap();
        let outcomes = simulate(&sprt, 0.005, 3000, 600, 5);
        let alarms = outcomes
            .iter()
            .filter(|o| o.decision == SequentialDecision::Cheat)
            .count();
        assert!(alarms <= tolerated(3000, 1e-3), "{alarms} false alarms");
        // A clean honest stream decides as fast as the lower bound allows.
        let clean = sprt.run((0..600).map(|i| (i / 3, false)));
        assert_eq!(clean.decision, SequentialDecision::Honest);
        assert_eq!(clean.checks_used, sprt.min_checks_to_honest());
        assert_eq!(clean.tokens_used, (clean.checks_used - 1) / 3 + 1);
    }

    #[test]
    fn errors_that_start_late_in_a_trial_are_still_caught() {
        let sprt = Sprt::new(0.0016, DEFAULT_P1, DEFAULT_ALPHA, DEFAULT_BETA).unwrap();
        // 30 clean tokens (90 checks: past Wald's honest bound), then one check in five rejects.
        let stream: Vec<(usize, bool)> = (0..192).map(|i| (i / 3, i >= 90 && i % 5 == 0)).collect();
        let out = sprt.run(stream.iter().copied());
        assert_eq!(out.decision, SequentialDecision::Cheat, "{out:?}");
        assert!(out.tokens_used > 30);
        // A test that stopped at the honest bound would have called it honest.
        let early: Vec<(usize, bool)> = stream[..sprt.min_checks_to_honest()].to_vec();
        assert_eq!(sprt.run(early).decision, SequentialDecision::Honest);
    }

    #[test]
    fn a_stream_that_ends_early_is_undecided() {
        let sprt = Sprt::new(0.005, DEFAULT_P1, DEFAULT_ALPHA, DEFAULT_BETA).unwrap();
        let short = sprt.run((0..6).map(|i| (i / 3, false)));
        assert_eq!(short.decision, SequentialDecision::Undecided);
        assert_eq!((short.checks_used, short.tokens_used), (6, 2));
    }

    #[test]
    fn calibration_takes_the_upper_bound_and_keeps_p1_above_p0() {
        let sprt = Sprt::calibrated(0, 1440, DEFAULT_P1, 1e-3, 1e-3).unwrap();
        assert!((sprt.p0 - (1.0 - 0.05f64.powf(1.0 / 1440.0))).abs() < 1e-9);
        assert_eq!(sprt.p1, DEFAULT_P1);
        // A noisy pairing whose honest bound exceeds p1: H1 moves above it.
        let noisy = Sprt::calibrated(30, 100, DEFAULT_P1, 1e-3, 1e-3).unwrap();
        assert!(noisy.p1 > noisy.p0 && noisy.p0 > 0.3);
        assert!(Sprt::calibrated(0, 0, 0.1, 1e-3, 1e-3).is_err());
        assert!(Sprt::new(0.1, 0.05, 1e-3, 1e-3).is_err());
        assert!(Sprt::new(0.01, 0.1, 0.0, 1e-3).is_err());
    }
}
