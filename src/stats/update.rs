//! What a decoder layer itself contributed, committed against recomputed (segment mode,
//! docs/policy.md "Segment mode: the layer's own update"). A segment verifier holds the
//! committed state entering layer l (x), the committed state leaving it (y) and its own
//! recomputation of the layer from that same x (y'). The state comparison y vs y' is dominated
//! by x, which both sides share; the layer's update Δ = y' − x is what a cheat in layer l
//! changes. These figures compare y − y' with Δ and with the rounding the committed dtype
//! forces on y.

use super::metrics::{CompareDtype, StatsError};

/// One position's layer-update figures (all in f64, from f32 inputs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpdateMetrics {
    /// ‖y − y'‖₂: the committed state leaving the layer against the recomputed one.
    pub error_l2: f64,
    /// ‖y' − x‖₂: the layer's update as the verifier recomputes it.
    pub update_l2: f64,
    /// √Σ (ulp(y'ᵢ)/2)² in the coarser of the committed and the verifier's dtype: the error
    /// rounding y' to that dtype alone may cause (the rounding floor).
    pub rounding_floor_l2: f64,
}

/// The figures for one position. `rounded` is the coarsest dtype the committed or the
/// recomputed state leaving the layer was rounded to (the committed rows' storage dtype, or the
/// verifier's compute dtype when coarser).
pub fn update_metrics(
    entering: &[f32],
    committed_leaving: &[f32],
    recomputed_leaving: &[f32],
    rounded: CompareDtype,
) -> Result<UpdateMetrics, StatsError> {
    for other in [committed_leaving.len(), recomputed_leaving.len()] {
        if other != entering.len() {
            return Err(StatsError::LengthMismatch {
                committed: other,
                recomputed: entering.len(),
            });
        }
    }
    if entering.is_empty() {
        return Err(StatsError::Empty);
    }
    let (mut error, mut update, mut floor) = (0f64, 0f64, 0f64);
    for ((&x, &y), &r) in entering
        .iter()
        .zip(committed_leaving)
        .zip(recomputed_leaving)
    {
        let e = y as f64 - r as f64;
        let d = r as f64 - x as f64;
        let half_ulp = rounded.ulp_at(r) / 2.0;
        error += e * e;
        update += d * d;
        floor += half_ulp * half_ulp;
    }
    Ok(UpdateMetrics {
        error_l2: error.sqrt(),
        update_l2: update.sqrt(),
        rounding_floor_l2: floor.sqrt(),
    })
}

/// The rounding unit of a precision tier, u = 2^−(mantissa bits + 1): the largest relative
/// error of rounding one value to it (f32 2^−24, f16 2^−11, bf16 2^−8).
pub fn unit_roundoff(tier: CompareDtype) -> f64 {
    2f64.powi(-(tier.mantissa_bits() + 1))
}

impl UpdateMetrics {
    /// The update error in units of what honest arithmetic in `tier` may cause:
    ///
    ///     z = ‖y − y'‖ / (rounding floor of y in the coarser dtype + u(tier) · ‖y' − x‖)
    ///
    /// Storing y rounds it by up to the floor; computing the update in `tier` moves it by a
    /// few u relative to the update itself. Honest pairs measure z ≈ 0.8 (p50), ≤ 2.9 in the
    /// f16 and bf16 tiers, whatever the layer (docs/policy.md "Segment mode"); a cheat in
    /// the layer moves y by a fraction of the update, z ≫ 1.
    pub fn z(&self, tier: CompareDtype) -> f64 {
        self.error_l2 / (self.rounding_floor_l2 + unit_roundoff(tier) * self.update_l2)
    }
}

/// Largest layer-update z (see [`UpdateMetrics::z`]) a segment check accepts, per precision
/// tier, and for pairs where a role runs the model's own block-quantized weights on quantized
/// kernels (`native`), which round activations to 8-bit blocks. YAML, inside a
/// precision-aware policy: `layer_update: {f32: 100, f16: 6, bf16: 6, native: 40}`.
///
/// Measured (`cargo test --release --lib measure_segment_update -- --ignored`, every layer of
/// two prompts × 24 tokens of this project's engine and of three PyTorch runs × 64 tokens;
/// docs/policy.md "Segment mode: the layer's own update"):
///
/// | pairing | z p50 | p99.9 | max | cheat in the same tier | z p50 | min layer median |
/// |---|---|---|---|---|---|---|
/// | f32 → f32 (this engine; PyTorch) | 0.0; 5.7 | 12.6; 19.6 | 22.7; 35.6 | q8_0 weights (f32) | 1.3e5 | 9.1e4 |
/// | f16 → f32 (this engine; PyTorch) | 0.85; 0.81 | 2.4; 2.0 | 2.8; 2.9 | — | | |
/// | bf16 → f32 (this engine; PyTorch) | 0.82; 0.78 | 2.0; 1.9 | 2.7; 2.4 | q4_0 weights (bf16) | 13.6 | 10.1 |
/// | native → f32 / native → native | 4.7 / 0.0 | 19.6 / 1.3 | 23.5 / 2.2 | | | |
/// | f32 → f16 / f32 → bf16 verifier (floor in the verifier's dtype) | | | 2.8 / 2.5 | | | |
///
/// Each limit is about twice the largest honest z of its row (f32: ≈ 3× PyTorch's 35.6, and
/// still 4.7× below the smallest q8_0 z, 472). In the bf16 tier q8_0 weights (z p50 2.1, max
/// 4.5) stay inside, the blind spot full mode has too; q4_0 weights are rejected at ≥ 97 % of
/// the positions of every layer.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateLimits {
    pub f32: f64,
    pub f16: f64,
    pub bf16: f64,
    pub native: f64,
}

impl Default for UpdateLimits {
    fn default() -> Self {
        UpdateLimits {
            f32: 100.0,
            f16: 6.0,
            bf16: 6.0,
            native: 40.0,
        }
    }
}

impl UpdateLimits {
    /// The limit for a pair judged in `tier`; `quantized_kernels` when a role's declared
    /// (and trusted) or own precision is `native` on block-quantized weights.
    pub fn limit(&self, tier: CompareDtype, quantized_kernels: bool) -> f64 {
        if quantized_kernels {
            return self.native;
        }
        match tier {
            CompareDtype::F32 => self.f32,
            CompareDtype::F16 => self.f16,
            CompareDtype::Bf16 => self.bf16,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("f32", self.f32),
            ("f16", self.f16),
            ("bf16", self.bf16),
            ("native", self.native),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(format!(
                    "policy threshold layer_update.{name} must be finite and > 0, got {value}"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CompareDtype::{Bf16, F16, F32};

    #[test]
    fn the_figures_of_a_known_case() {
        // x = (1, 0), y' = (1, 2): the update is (0, 2); y differs from y' by (0, 0.5).
        let m = update_metrics(&[1.0, 0.0], &[1.0, 2.5], &[1.0, 2.0], Bf16).unwrap();
        assert_eq!(m.error_l2, 0.5);
        assert_eq!(m.update_l2, 2.0);
        // bf16 ulp at 1 is 2^-7, at 2 it is 2^-6: half-ulps 2^-8 and 2^-7.
        let floor = (2f64.powi(-16) + 2f64.powi(-14)).sqrt();
        assert!((m.rounding_floor_l2 - floor).abs() < 1e-15);
        let z = 0.5 / (floor + 2f64.powi(-8) * 2.0);
        assert!((m.z(Bf16) - z).abs() < 1e-12);
        // A finer tier expects less error from the same update: a larger z.
        assert!(m.z(F32) > m.z(F16) && m.z(F16) > m.z(Bf16));
        assert_eq!(unit_roundoff(F32), 2f64.powi(-24));
        assert_eq!(unit_roundoff(F16), 2f64.powi(-11));
        assert!(update_metrics(&[1.0], &[1.0, 2.0], &[1.0], F32).is_err());
        assert!(update_metrics(&[], &[], &[], F32).is_err());
    }

    #[test]
    fn a_skipped_layer_has_z_far_above_every_limit_and_nan_rejects() {
        // A skipped layer commits y = x: the error is the whole update.
        let x = [0.5f32, -1.0, 2.0];
        let recomputed = [0.9f32, -0.7, 2.4];
        let m = update_metrics(&x, &x, &recomputed, F32).unwrap();
        let limits = UpdateLimits::default();
        for tier in [F32, F16, Bf16] {
            assert!(m.z(tier) > limits.limit(tier, true), "{tier}");
        }
        let nan = update_metrics(&x, &[f32::NAN, 0.0, 0.0], &recomputed, F32).unwrap();
        assert!(nan.z(Bf16).is_nan());
        assert!(limits.validate().is_ok());
        let bad = UpdateLimits {
            native: 0.0,
            ..limits
        };
        assert!(bad.validate().unwrap_err().contains("layer_update.native"));
    }
}
