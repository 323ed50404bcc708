//! Acceptance policies: turn one check's metrics into ACCEPT or REJECT, and a run's accept rate
//! into PASS or FAIL.

use serde::{Deserialize, Serialize};

use super::metrics::{CheckMetrics, CompareDtype};
use super::update::UpdateLimits;

/// mean|Δ| below this is accepted by the seed rule whatever Pe says (bit-exact-ish runs).
pub const SEED_EXACT_MEAN_ABS: f64 = 1e-6;

/// Per-check thresholds for one precision tier.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierThresholds {
    /// Largest relative L2 error ‖inf − ver‖/‖ver‖ accepted.
    pub rel_l2_max: f64,
    /// Largest exponent-mismatch rate accepted.
    pub pe_max: f64,
}

impl TierThresholds {
    /// ACCEPT iff both metrics are within their limits (written so that NaN rejects).
    pub fn accepts(&self, m: &CheckMetrics) -> bool {
        m.rel_l2 <= self.rel_l2_max && m.pe <= self.pe_max
    }

    fn validate(&self, tier: &str) -> Result<(), String> {
        check_positive(&format!("{tier}.rel_l2_max"), self.rel_l2_max)?;
        check_fraction(&format!("{tier}.pe_max"), self.pe_max)
    }
}

/// Which policy decides each check, with its thresholds (from `experiments.yaml`).
///
/// YAML shape (unknown fields are rejected, so a typo cannot silently fall back to a default):
/// ```yaml
/// policy: {kind: precision_aware, f32: {rel_l2_max: 1e-4, pe_max: 0.05},
///          f16: {rel_l2_max: 2e-2, pe_max: 0.1}, bf16: {rel_l2_max: 0.1, pe_max: 0.35}}
/// policy: {kind: seed, mean_epsilon: 0.05, pe_max: 0.05}
/// ```
///
/// # Seed rule
/// The reference project states a four-condition rule that additionally requires a Pm
/// condition and a Pw condition together. Pm counts elements with |Δ| > 1e-5 and Pw those with
/// |Δ| < 1e-7: disjoint sets (Pm + Pw ≤ 1), so its Pm and Pw conditions can never hold at the
/// same time and that part of the rule never fires. Its effective rule is therefore just
/// ACCEPT if mean|Δ| < 1e-6, or (mean|Δ| < `mean_epsilon` and Pe < `pe_max`),
/// which is what [`PolicyConfig::Seed`] reproduces.
///
/// # Precision-aware rule (the default)
/// The thresholds come from the *coarsest* dtype of the (inference, verifier) pair
/// (bf16 > f16 > f32), because the coarser side bounds how closely an honest pair can agree.
/// ACCEPT iff rel_l2 ≤ `rel_l2_max` and Pe ≤ `pe_max`. See [`PolicyConfig::default`] for the
/// values and what each tier can and cannot detect.
///
/// Any check with a non-finite element is REJECTed by every policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PolicyConfig {
    /// The reference project's effective rule: ACCEPT if mean|Δ| < 1e-6, or
    /// mean|Δ| < `mean_epsilon` and Pe < `pe_max`.
    Seed { mean_epsilon: f64, pe_max: f64 },
    /// The default: thresholds chosen by the coarsest dtype of the (inference, verifier) pair.
    PrecisionAware {
        f32: TierThresholds,
        f16: TierThresholds,
        bf16: TierThresholds,
        /// Segment mode: the largest layer-update z accepted per tier (absent: the measured
        /// defaults of [`UpdateLimits`]). A full verification does not read it.
        #[serde(default)]
        layer_update: UpdateLimits,
    },
}

/// Default f32-tier thresholds. Honest f32 runs agree across CPU and GPU to rel_l2 ≤ 8e-6
/// (p99 1.5e-6) with Pe ≤ 0.002; our CPU f32 must also match Hugging Face to 1e-4, so the limit
/// sits there, 12× above the worst honest check. An 8-bit-weights cheat starts at 2.7e-3 and a
/// 4-bit one at 4.9e-2: rel_l2 rejects every measured q8 and q4 check. Pe grows roughly in
/// proportion to rel_l2 (0.002 at 8e-6 → about 0.025 at 1e-4), so pe_max = 0.05 leaves 2×
/// margin at the rel_l2 limit; here Pe is a safety net, rel_l2 does the detecting.
pub const F32_TIER_DEFAULT: TierThresholds = TierThresholds {
    rel_l2_max: 1e-4,
    pe_max: 0.05,
};

/// Default f16-tier thresholds (f16 on either side, no bf16). Honest: rel_l2 p99 2.5e-3, max
/// 1.4e-2; Pe p99 0.026, max 0.071. 4-bit cheat: rel_l2 ≥ 4.9e-2 (median 0.21), Pe ≥ 0.41, so
/// 2e-2 and 0.1 reject every measured q4 check while accepting every measured honest one.
/// An 8-bit cheat (rel_l2 median 1.2e-2, p99 2.3e-2; Pe median 0.089, p99 0.15) overlaps the
/// honest tail: most of its checks are accepted, a minority (Pe > 0.1, rel_l2 > 2e-2) rejected,
/// so q8 is detectable only statistically, through a lower accept rate over many checks.
pub const F16_TIER_DEFAULT: TierThresholds = TierThresholds {
    rel_l2_max: 2e-2,
    pe_max: 0.1,
};

/// Default bf16-tier thresholds (bf16 on either side). Honest: rel_l2 p99 2.2e-2, max 0.13;
/// Pe p99 0.12, max 0.30. rel_l2 ≤ 0.1 is 4.5× the honest p99 and below the 4-bit cheat's
/// median (0.21); it rejects only the rare honest outliers (a few in thousands). Pe ≤ 0.35 lies
/// between the honest maximum (0.30) and the lowest 4-bit cheat Pe measured here (0.387 over the
/// 7776 q4 checks of docs/policy.md's runs), so every measured q4 check is rejected. An 8-bit cheat (rel_l2 p99 3e-2, Pe p99 0.17) is indistinguishable from
/// honest bf16 drift: a bf16 tier cannot detect 8-bit weights, per check or by accept rate.
pub const BF16_TIER_DEFAULT: TierThresholds = TierThresholds {
    rel_l2_max: 0.1,
    pe_max: 0.35,
};

/// Default seed-rule thresholds, sized for an f16 pair (the reference project's setting):
/// honest f16 mean|Δ| has p99 0.026 and Pe p99 0.026, so 0.05 for both is about 2× the honest
/// p99 (the rare honest outliers above it are rejected), while 4-bit cheats (mean|Δ| ≥ 0.33,
/// Pe ≥ 0.41) are always rejected and 8-bit ones (mean|Δ| median 0.063) mostly rejected.
pub const SEED_MEAN_EPSILON_DEFAULT: f64 = 0.05;
pub const SEED_PE_MAX_DEFAULT: f64 = 0.05;

impl Default for PolicyConfig {
    /// Precision-aware thresholds from the measured honest and cheating drift
    /// (docs/measurements-h200.md: SmolLM2-135M on an H200 and its host CPU, 2286 checks per
    /// pair). What each tier detects per check:
    ///
    /// | tier | rel_l2_max | pe_max | q4 weights | q8 weights |
    /// |---|---|---|---|---|
    /// | f32  | 1e-4 | 0.05 | yes | yes |
    /// | f16  | 2e-2 | 0.1  | yes | only statistically (accept rate) |
    /// | bf16 | 0.1  | 0.35 | yes | no |
    ///
    /// Reasons per tier: [`F32_TIER_DEFAULT`], [`F16_TIER_DEFAULT`], [`BF16_TIER_DEFAULT`].
    fn default() -> Self {
        PolicyConfig::PrecisionAware {
            f32: F32_TIER_DEFAULT,
            f16: F16_TIER_DEFAULT,
            bf16: BF16_TIER_DEFAULT,
            layer_update: UpdateLimits::default(),
        }
    }
}

impl PolicyConfig {
    /// The seed rule with [`SEED_MEAN_EPSILON_DEFAULT`] and [`SEED_PE_MAX_DEFAULT`].
    pub fn seed_default() -> Self {
        PolicyConfig::Seed {
            mean_epsilon: SEED_MEAN_EPSILON_DEFAULT,
            pe_max: SEED_PE_MAX_DEFAULT,
        }
    }

    /// The `kind` tag as written in YAML: "seed" or "precision_aware".
    pub fn name(&self) -> &'static str {
        match self {
            PolicyConfig::Seed { .. } => "seed",
            PolicyConfig::PrecisionAware { .. } => "precision_aware",
        }
    }

    /// The tier a role is judged in: its compute dtype, or at least bf16 when its linear layers
    /// run candle's quantized kernels on the model's own block-quantized weights (`native` on
    /// a Q4_1 GGUF): those round activations to 8-bit blocks, an honest perturbation the size of
    /// bf16 drift (docs/policy.md: native↔native rel L2 max 2.8e-2, native↔full 9.2e-2).
    pub fn role_tier(dtype: CompareDtype, rounds_activations: bool) -> CompareDtype {
        if rounds_activations {
            CompareDtype::coarsest(dtype, CompareDtype::Bf16)
        } else {
            dtype
        }
    }

    /// The thresholds a precision-aware policy applies to this pair (None for the seed rule).
    pub fn tier_thresholds(
        &self,
        inference_dtype: CompareDtype,
        verifier_dtype: CompareDtype,
    ) -> Option<TierThresholds> {
        match self {
            PolicyConfig::Seed { .. } => None,
            PolicyConfig::PrecisionAware { f32, f16, bf16, .. } => Some(
                match CompareDtype::coarsest(inference_dtype, verifier_dtype) {
                    CompareDtype::F32 => *f32,
                    CompareDtype::F16 => *f16,
                    CompareDtype::Bf16 => *bf16,
                },
            ),
        }
    }

    /// ACCEPT (true) or REJECT (false) one check. A check with any non-finite element is
    /// always rejected; every comparison is written so that a NaN metric rejects too.
    pub fn decide(
        &self,
        m: &CheckMetrics,
        inference_dtype: CompareDtype,
        verifier_dtype: CompareDtype,
    ) -> bool {
        if m.non_finite > 0 {
            return false;
        }
        match self {
            PolicyConfig::Seed {
                mean_epsilon,
                pe_max,
            } => m.mean_abs < SEED_EXACT_MEAN_ABS || (m.mean_abs < *mean_epsilon && m.pe < *pe_max),
            PolicyConfig::PrecisionAware { .. } => self
                .tier_thresholds(inference_dtype, verifier_dtype)
                .is_some_and(|tier| tier.accepts(m)),
        }
    }

    /// The layer-update limits segment verification applies (docs/policy.md "Segment mode"):
    /// the precision-aware policy's own, the measured defaults under the seed rule (which
    /// judges states only and has no such limits of its own).
    pub fn layer_update_limits(&self) -> UpdateLimits {
        match self {
            PolicyConfig::PrecisionAware { layer_update, .. } => *layer_update,
            PolicyConfig::Seed { .. } => UpdateLimits::default(),
        }
    }

    /// Check that every threshold is usable: finite and > 0, and Pe limits within [0, 1].
    pub fn validate(&self) -> Result<(), String> {
        match self {
            PolicyConfig::Seed {
                mean_epsilon,
                pe_max,
            } => {
                check_positive("mean_epsilon", *mean_epsilon)?;
                check_fraction("pe_max", *pe_max)?;
                // The seed rule accepts only `pe < pe_max`: 0 would reject nearly everything.
                check_positive("pe_max", *pe_max)
            }
            PolicyConfig::PrecisionAware {
                f32,
                f16,
                bf16,
                layer_update,
            } => {
                f32.validate("f32")?;
                f16.validate("f16")?;
                bf16.validate("bf16")?;
                layer_update.validate()
            }
        }
    }
}

fn check_positive(name: &str, value: f64) -> Result<(), String> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(format!(
            "policy threshold {name} must be finite and > 0, got {value}"
        ))
    }
}

fn check_fraction(name: &str, value: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "policy threshold {name} is a fraction and must be in [0, 1], got {value}"
        ))
    }
}

/// Verdict of one verifier on one trial (`PASS`/`FAIL` in result files and on screen).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    #[serde(rename = "PASS")]
    Pass,
    #[serde(rename = "FAIL")]
    Fail,
}

impl Verdict {
    pub fn is_pass(self) -> bool {
        self == Verdict::Pass
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so that widths in format strings apply (report tables).
        f.pad(match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
        })
    }
}

/// PASS iff the run's accept rate strictly exceeds the experiment's cutoff, as in "a verifier
/// passes if its accept rate exceeds the cutoff" (the reference's "> 95%"). Consequently a
/// cutoff of 1.0 can never pass; use e.g. 0.999 to demand (almost) every check. A NaN accept
/// rate fails.
pub fn verdict(accept_rate: f64, cutoff: f64) -> Verdict {
    if accept_rate > cutoff {
        Verdict::Pass
    } else {
        Verdict::Fail
    }
}

/// Token checks: the tolerance δ on a generated token's margin (docs/sampling.md) in each
/// precision tier, in logit units. A token is accepted when its margin ≥ −δ. Measured from
/// honest runs of this project and of PyTorch (docs/policy.md, "Token checks"): at least twice
/// the largest honest logit drift seen in the tier. `quantized_kernels`: a role runs the
/// model's own block-quantized weights on kernels that round activations (`native`), judged in
/// the bf16 tier for its states but with its own, wider δ for tokens.
pub fn token_margin_tolerance(tier: CompareDtype, quantized_kernels: bool) -> f64 {
    if quantized_kernels {
        return TOKEN_DELTA_NATIVE;
    }
    match tier {
        CompareDtype::F32 => TOKEN_DELTA_F32,
        CompareDtype::F16 => TOKEN_DELTA_F16,
        CompareDtype::Bf16 => TOKEN_DELTA_BF16,
    }
}

pub const TOKEN_DELTA_F32: f64 = 0.01;
pub const TOKEN_DELTA_F16: f64 = 0.2;
/// Twice PyTorch's bf16 drift 0.51 would be 1.02; 2.0 was set when native kernels shared it.
pub const TOKEN_DELTA_BF16: f64 = 2.0;
/// Quantized kernels' drift is a chaotic function of f32 rounding order: a one-ulp change can
/// flip an activation's 8-bit rounding, and the flip propagates. The same measurement gave
/// 0.75, 0.83 and 1.21 for three kernels that differ only in summation order (sessions 7, 9 and
/// the eight-row kernels, `token_tolerances` test), so 2 × 1.21 = 2.42 → 2.5, kept apart from
/// bf16 so a cheater declaring bf16 does not get the wider δ (a q4_0 replay declaring bf16 is
/// rejected by one token at margin −2.39: docs/policy.md).
pub const TOKEN_DELTA_NATIVE: f64 = 2.5;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::metrics::compare;
    use CompareDtype::{Bf16, F16, F32};

    /// Metrics with only the fields the policies read set; everything else clean.
    fn metrics(rel_l2: f64, pe: f64, mean_abs: f64) -> CheckMetrics {
        CheckMetrics {
            n: 576,
            exact_matches: 0,
            pe,
            pm: 0.0,
            pw: 0.0,
            mean_abs,
            max_abs: mean_abs,
            count_gt_0_2: 0,
            count_le_0_2: 0,
            count_gt_5: 0,
            count_0_2_to_5: 0,
            rel_l2,
            cosine: 1.0,
            ulp_mean: 0.0,
            ulp_median: 0.0,
            non_finite: 0,
        }
    }

    #[test]
    fn tier_is_the_coarsest_dtype_of_the_pair() {
        let policy = PolicyConfig::default();
        let t = |a, b| policy.tier_thresholds(a, b).unwrap();
        assert_eq!(t(F32, F32), F32_TIER_DEFAULT);
        assert_eq!(t(F16, F32), F16_TIER_DEFAULT);
        assert_eq!(t(F32, F16), F16_TIER_DEFAULT);
        assert_eq!(t(Bf16, F16), BF16_TIER_DEFAULT);
        assert_eq!(t(F32, Bf16), BF16_TIER_DEFAULT);
    }

    #[test]
    fn default_policy_separates_measured_honest_and_cheat_levels() {
        let p = PolicyConfig::default();
        // Honest maxima from the measurements are accepted in their tier.
        assert!(p.decide(&metrics(8e-6, 0.002, 0.0), F32, F32));
        assert!(p.decide(&metrics(1.4e-2, 0.071, 0.0), F32, F16));
        assert!(p.decide(&metrics(4.5e-2, 0.15, 0.0), Bf16, Bf16));
        // q8 median is caught at f32, not at f16 (only statistically) nor bf16.
        assert!(!p.decide(&metrics(1.2e-2, 0.089, 0.0), F32, F32));
        assert!(p.decide(&metrics(1.2e-2, 0.089, 0.0), F16, F32));
        assert!(p.decide(&metrics(3.0e-2, 0.17, 0.0), F16, Bf16));
        // q4 minimum is caught in every tier.
        for (a, b) in [(F32, F32), (F16, F16), (F16, Bf16)] {
            assert!(!p.decide(&metrics(4.9e-2, 0.40, 0.0), a, b));
        }
        assert!(p.validate().is_ok());
    }

    #[test]
    fn non_finite_checks_always_reject() {
        let m = compare(&[f32::NAN, 1.0], &[1.0, 1.0], F32).unwrap();
        let mut clean_looking = metrics(0.0, 0.0, 0.0);
        clean_looking.non_finite = 1;
        for p in [PolicyConfig::default(), PolicyConfig::seed_default()] {
            assert!(!p.decide(&m, Bf16, Bf16));
            assert!(!p.decide(&clean_looking, Bf16, Bf16));
            assert!(!p.decide(&metrics(f64::NAN, f64::NAN, f64::NAN), Bf16, Bf16));
        }
    }

    #[test]
    fn seed_rule() {
        let p = PolicyConfig::Seed {
            mean_epsilon: 0.01,
            pe_max: 0.05,
        };
        assert_eq!(p.name(), "seed");
        // Tiny mean error accepts even with a large Pe.
        assert!(p.decide(&metrics(0.0, 0.9, 5e-7), F16, F16));
        assert!(p.decide(&metrics(0.0, 0.04, 0.009), F16, F16));
        assert!(!p.decide(&metrics(0.0, 0.05, 0.009), F16, F16)); // strict <
        assert!(!p.decide(&metrics(0.0, 0.04, 0.01), F16, F16));
        // The dtype pair does not matter to the seed rule.
        assert!(p.decide(&metrics(0.0, 0.04, 0.009), F32, Bf16));
        assert_eq!(p.tier_thresholds(F32, F32), None);
    }

    #[test]
    fn yaml_shapes_parse_and_round_trip() {
        #[derive(Deserialize)]
        struct Experiment {
            policy: PolicyConfig,
        }
        let yaml = "policy: {kind: precision_aware, f32: {rel_l2_max: 1e-4, pe_max: 0.05}, \
                    f16: {rel_l2_max: 2.0e-2, pe_max: 0.1}, bf16: {rel_l2_max: 0.1, pe_max: 0.35}}";
        let e: Experiment = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(e.policy, PolicyConfig::default());
        assert_eq!(e.policy.name(), "precision_aware");
        let e: Experiment =
            serde_yaml::from_str("policy: {kind: seed, mean_epsilon: 0.05, pe_max: 0.05}").unwrap();
        assert_eq!(e.policy, PolicyConfig::seed_default());
        // An experiment may set its own layer-update limits.
        let e: Experiment = serde_yaml::from_str(
            "policy: {kind: precision_aware, f32: {rel_l2_max: 1e-4, pe_max: 0.05}, \
             f16: {rel_l2_max: 2.0e-2, pe_max: 0.1}, bf16: {rel_l2_max: 0.1, pe_max: 0.35}, \
             layer_update: {f32: 50, f16: 5, bf16: 4, native: 30}}",
        )
        .unwrap();
        let limits = e.policy.layer_update_limits();
        assert_eq!((limits.bf16, limits.native), (4.0, 30.0));
        assert_eq!(limits.limit(CompareDtype::Bf16, true), 30.0);
        assert_eq!(
            PolicyConfig::seed_default().layer_update_limits(),
            UpdateLimits::default()
        );
        for p in [PolicyConfig::default(), PolicyConfig::seed_default()] {
            let back: PolicyConfig =
                serde_yaml::from_str(&serde_yaml::to_string(&p).unwrap()).unwrap();
            assert_eq!(back, p);
            let back: PolicyConfig =
                serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
            assert_eq!(back, p);
        }
    }

    #[test]
    fn unknown_fields_and_kinds_are_rejected() {
        let bad = [
            "{kind: seed, mean_epsilon: 0.05, pe_max: 0.05, pm_min: 0.1}",
            "{kind: precision_aware, f32: {rel_l2_max: 1e-4, pe_max: 0.05}, \
             f16: {rel_l2_max: 2e-2, pe_max: 0.1}, bf16: {rel_l2_max: 0.1, pe_max: 0.35}, f8: {}}",
            "{kind: precision_aware, f32: {rel_l2_max: 1e-4, pe_max: 0.05, cos_min: 0.9}, \
             f16: {rel_l2_max: 2e-2, pe_max: 0.1}, bf16: {rel_l2_max: 0.1, pe_max: 0.35}}",
            "{kind: seed, mean_epsilon: 0.05}",
            "{kind: magic, mean_epsilon: 0.05, pe_max: 0.05}",
            "{mean_epsilon: 0.05, pe_max: 0.05}",
        ];
        for yaml in bad {
            assert!(
                serde_yaml::from_str::<PolicyConfig>(yaml).is_err(),
                "accepted: {yaml}"
            );
        }
        let json = r#"{"kind":"seed","mean_epsilon":0.05,"pe_max":0.05,"extra":1}"#;
        // The layer-update limits: all four tiers named, nothing else.
        for layer_update in [
            "{f32: 100, f16: 6, bf16: 6}",
            "{f32: 1, f16: 1, bf16: 1, native: 1, f8: 1}",
        ] {
            let yaml = format!(
                "{{kind: precision_aware, f32: {{rel_l2_max: 1e-4, pe_max: 0.05}}, \
                 f16: {{rel_l2_max: 2e-2, pe_max: 0.1}}, bf16: {{rel_l2_max: 0.1, pe_max: 0.35}}, \
                 layer_update: {layer_update}}}"
            );
            assert!(
                serde_yaml::from_str::<PolicyConfig>(&yaml).is_err(),
                "accepted: {yaml}"
            );
        }
        assert!(serde_json::from_str::<PolicyConfig>(json).is_err());
    }

    #[test]
    fn validation() {
        assert!(PolicyConfig::seed_default().validate().is_ok());
        let bad_seed = [
            (0.0, 0.05),
            (-1.0, 0.05),
            (f64::INFINITY, 0.05),
            (f64::NAN, 0.05),
            (0.05, 1.5),
            (0.05, -0.1),
            (0.05, f64::NAN),
        ];
        for (mean_epsilon, pe_max) in bad_seed {
            assert!(PolicyConfig::Seed {
                mean_epsilon,
                pe_max
            }
            .validate()
            .is_err());
        }
        let mut bad_tier = PolicyConfig::default();
        if let PolicyConfig::PrecisionAware { f16, .. } = &mut bad_tier {
            f16.rel_l2_max = 0.0;
        }
        let err = bad_tier.validate().unwrap_err();
        assert!(err.contains("f16.rel_l2_max"), "{err}");
    }

    #[test]
    fn verdict_is_strictly_greater() {
        assert_eq!(verdict(0.96, 0.95), Verdict::Pass);
        assert_eq!(verdict(0.95, 0.95), Verdict::Fail);
        assert_eq!(verdict(1.0, 1.0), Verdict::Fail);
        assert_eq!(verdict(f64::NAN, 0.5), Verdict::Fail);
        assert_eq!(
            (Verdict::Pass.to_string(), Verdict::Fail.to_string()),
            ("PASS".to_string(), "FAIL".to_string())
        );
    }
}
