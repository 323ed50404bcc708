//! Per-check float-difference statistics between a committed hidden-state vector (the
//! inferencer's) and a recomputed one (the verifier's). One check = one (token, layer) vector.
//!
//! Conventions (the same for every function here):
//! - Δ = committed − recomputed, computed and accumulated in f64 (exact for f32 inputs).
//! - Exponents are compared on the f32 bit patterns, as the reference project does.
//! - +0 and −0 count as an exact match: they are equal values, and a reduction order change
//!   can flip the sign of a zero without any loss of information.
//! - Non-finite elements (NaN or ±inf in either vector) make the check look as bad as possible:
//!   they count as exponent mismatches, as |Δ| > 1e-5, > 0.2 and > 5; never as exact or tiny;
//!   and mean/max |Δ|, rel_l2 and the ULP statistics become +inf, cosine −1. So a check with a
//!   non-finite element can never look better than a clean one, whatever threshold is used.

use serde::{Deserialize, Serialize};

/// The floating-point format the two vectors were computed in; ULP errors are measured in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompareDtype {
    F32,
    F16,
    Bf16,
}

impl CompareDtype {
    /// Explicitly stored mantissa (fraction) bits.
    pub fn mantissa_bits(self) -> i32 {
        match self {
            CompareDtype::F32 => 23,
            CompareDtype::F16 => 10,
            CompareDtype::Bf16 => 7,
        }
    }

    /// Unbiased exponent of the smallest normal number; below it values are subnormal and the
    /// ULP stops shrinking.
    pub fn min_normal_exponent(self) -> i32 {
        match self {
            CompareDtype::F32 | CompareDtype::Bf16 => -126,
            CompareDtype::F16 => -14,
        }
    }

    /// The name used in configs and reports: "f32", "f16" or "bf16".
    pub fn name(self) -> &'static str {
        match self {
            CompareDtype::F32 => "f32",
            CompareDtype::F16 => "f16",
            CompareDtype::Bf16 => "bf16",
        }
    }

    /// How coarse the format is (fewer mantissa bits = coarser): f32 0, f16 1, bf16 2.
    pub fn coarseness(self) -> u8 {
        match self {
            CompareDtype::F32 => 0,
            CompareDtype::F16 => 1,
            CompareDtype::Bf16 => 2,
        }
    }

    /// The coarser of two formats: the one that bounds how closely the pair can agree.
    pub fn coarsest(a: CompareDtype, b: CompareDtype) -> CompareDtype {
        if a.coarseness() >= b.coarseness() {
            a
        } else {
            b
        }
    }

    /// Size of one unit in the last place of `dtype` at the magnitude of `value`.
    /// The exponent is read from the f32 bit pattern; zeros and values below the format's
    /// smallest normal number get the subnormal spacing 2^(min_normal_exponent − mantissa_bits).
    pub fn ulp_at(self, value: f32) -> f64 {
        let field = f32_exponent_field(value);
        let unbiased = if field == 0 { -126 } else { field as i32 - 127 };
        let exponent = unbiased.max(self.min_normal_exponent());
        2f64.powi(exponent - self.mantissa_bits())
    }
}

impl std::fmt::Display for CompareDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl CompareDtype {
    /// The format `name()` writes: "f32", "f16" or "bf16", the spellings every file, profile
    /// and tier of this program uses (as `model::device::dtype_from_name` reads them for
    /// candle); no other spelling, so a name means one thing everywhere.
    pub fn from_name(name: &str) -> Option<CompareDtype> {
        [CompareDtype::F32, CompareDtype::F16, CompareDtype::Bf16]
            .into_iter()
            .find(|d| d.name() == name)
    }
}

/// Everything measured for one (token position, layer) check. All accumulation is in f64.
///
/// Float fields serialize non-finite values as the strings "inf", "-inf" and "nan" (JSON has no
/// infinity; serde_json would silently write `null` and then fail to read it back).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckMetrics {
    /// Number of elements compared.
    pub n: usize,
    /// Elements that are bit-for-bit equal (as f32).
    pub exact_matches: usize,
    /// Fraction of elements whose IEEE-754 exponent bits differ (compared as f32).
    #[serde(with = "float_serde")]
    pub pe: f64,
    /// Fraction of elements with |Δ| > 1e-5.
    #[serde(with = "float_serde")]
    pub pm: f64,
    /// Fraction of elements with |Δ| < 1e-7.
    #[serde(with = "float_serde")]
    pub pw: f64,
    #[serde(with = "float_serde")]
    pub mean_abs: f64,
    #[serde(with = "float_serde")]
    pub max_abs: f64,
    /// Counts of |Δ| > 0.2, 0 < |Δ| ≤ 0.2, |Δ| > 5 and 0.2 < |Δ| ≤ 5 (the reference project's bins).
    pub count_gt_0_2: usize,
    pub count_le_0_2: usize,
    pub count_gt_5: usize,
    pub count_0_2_to_5: usize,
    /// ‖a − b‖₂ / ‖b‖₂ with b the verifier's vector (0 when both are zero).
    #[serde(with = "float_serde")]
    pub rel_l2: f64,
    #[serde(with = "float_serde")]
    pub cosine: f64,
    /// Mantissa error in ULPs of the compared dtype, over elements whose exponents match.
    #[serde(with = "float_serde")]
    pub ulp_mean: f64,
    #[serde(with = "float_serde")]
    pub ulp_median: f64,
    /// Elements that are NaN or infinite in either vector.
    pub non_finite: usize,
}

/// Why two vectors could not be compared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatsError {
    #[error("committed vector has {committed} elements but the recomputed one has {recomputed}")]
    LengthMismatch { committed: usize, recomputed: usize },
    #[error("cannot compare empty vectors")]
    Empty,
}

/// |Δ| above this counts toward Pm (the reference project's "mismatch").
pub const PM_THRESHOLD: f64 = 1e-5;
/// |Δ| below this counts toward Pw (the reference project's "within tolerance").
pub const PW_THRESHOLD: f64 = 1e-7;
/// Bin edges of the reference project's |Δ| histogram.
pub const BIN_SMALL: f64 = 0.2;
pub const BIN_LARGE: f64 = 5.0;

/// The 8-bit biased exponent field of an f32 (0 for zeros and subnormals, 255 for inf/NaN).
pub fn f32_exponent_field(value: f32) -> u32 {
    (value.to_bits() >> 23) & 0xff
}

/// Compare the inferencer's committed vector with the verifier's recomputed one.
/// `dtype` is the format ULP errors are measured in (normally the coarser of the two runs').
pub fn compare(
    committed: &[f32],
    recomputed: &[f32],
    dtype: CompareDtype,
) -> Result<CheckMetrics, StatsError> {
    if committed.len() != recomputed.len() {
        return Err(StatsError::LengthMismatch {
            committed: committed.len(),
            recomputed: recomputed.len(),
        });
    }
    if committed.is_empty() {
        return Err(StatsError::Empty);
    }
    let n = committed.len();

    let mut exact_matches = 0usize;
    let mut exponent_mismatches = 0usize;
    let mut above_pm = 0usize;
    let mut below_pw = 0usize;
    let mut count_gt_0_2 = 0usize;
    let mut count_le_0_2 = 0usize;
    let mut count_gt_5 = 0usize;
    let mut count_0_2_to_5 = 0usize;
    let mut non_finite = 0usize;
    let mut sum_abs = 0f64;
    let mut max_abs = 0f64;
    let mut sum_sq_diff = 0f64;
    let mut sum_sq_committed = 0f64;
    let mut sum_sq_recomputed = 0f64;
    let mut dot = 0f64;
    let mut ulp_errors: Vec<f64> = Vec::with_capacity(n);

    for (&a, &b) in committed.iter().zip(recomputed) {
        if !a.is_finite() || !b.is_finite() {
            non_finite += 1;
            exponent_mismatches += 1;
            above_pm += 1;
            count_gt_0_2 += 1;
            count_gt_5 += 1;
            continue;
        }
        let (a64, b64) = (a as f64, b as f64);
        let abs_delta = (a64 - b64).abs();
        sum_abs += abs_delta;
        max_abs = max_abs.max(abs_delta);
        sum_sq_diff += abs_delta * abs_delta;
        sum_sq_committed += a64 * a64;
        sum_sq_recomputed += b64 * b64;
        dot += a64 * b64;

        if a.to_bits() == b.to_bits() || (a == 0.0 && b == 0.0) {
            exact_matches += 1;
        }
        if f32_exponent_field(a) != f32_exponent_field(b) {
            exponent_mismatches += 1;
        } else {
            ulp_errors.push(abs_delta / dtype.ulp_at(b));
        }
        if abs_delta > PM_THRESHOLD {
            above_pm += 1;
        }
        if abs_delta < PW_THRESHOLD {
            below_pw += 1;
        }
        if abs_delta > BIN_SMALL {
            count_gt_0_2 += 1;
            if abs_delta > BIN_LARGE {
                count_gt_5 += 1;
            } else {
                count_0_2_to_5 += 1;
            }
        } else if abs_delta > 0.0 {
            count_le_0_2 += 1;
        }
    }

    let fraction = |count: usize| count as f64 / n as f64;
    let mut metrics = CheckMetrics {
        n,
        exact_matches,
        pe: fraction(exponent_mismatches),
        pm: fraction(above_pm),
        pw: fraction(below_pw),
        mean_abs: sum_abs / n as f64,
        max_abs,
        count_gt_0_2,
        count_le_0_2,
        count_gt_5,
        count_0_2_to_5,
        rel_l2: relative_l2(sum_sq_diff, sum_sq_recomputed),
        cosine: cosine(dot, sum_sq_committed, sum_sq_recomputed),
        ulp_mean: mean(&ulp_errors),
        ulp_median: median(&mut ulp_errors),
        non_finite,
    };
    if non_finite > 0 {
        metrics.mean_abs = f64::INFINITY;
        metrics.max_abs = f64::INFINITY;
        metrics.rel_l2 = f64::INFINITY;
        metrics.ulp_mean = f64::INFINITY;
        metrics.ulp_median = f64::INFINITY;
        metrics.cosine = -1.0;
    }
    Ok(metrics)
}

/// ‖a − b‖/‖b‖ from squared norms: 0 when both are zero, +inf when only b is zero.
fn relative_l2(sum_sq_diff: f64, sum_sq_recomputed: f64) -> f64 {
    if sum_sq_recomputed == 0.0 {
        if sum_sq_diff == 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    } else {
        (sum_sq_diff / sum_sq_recomputed).sqrt()
    }
}

/// Cosine similarity: 1 when both vectors are zero (identical), 0 when only one is.
fn cosine(dot: f64, sum_sq_a: f64, sum_sq_b: f64) -> f64 {
    match (sum_sq_a == 0.0, sum_sq_b == 0.0) {
        (true, true) => 1.0,
        (true, false) | (false, true) => 0.0,
        (false, false) => (dot / (sum_sq_a.sqrt() * sum_sq_b.sqrt())).clamp(-1.0, 1.0),
    }
}

/// Mean, 0 for no values (no exponent-matching elements means no ULP error to report).
fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// Median (mean of the two middle values for an even count), 0 for no values.
fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_unstable_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Serde for f64 that survives JSON: finite values as numbers, non-finite ones as the strings
/// "inf", "-inf", "nan". Reads numbers, those strings (also YAML's `.inf`), and `null` as NaN
/// (what serde_json writes for any non-finite float).
pub mod float_serde {
    use serde::de::{self, Deserializer, Visitor};
    use serde::ser::Serializer;
    use serde::{Deserialize, Serialize};

    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        if value.is_finite() {
            serializer.serialize_f64(*value)
        } else if value.is_nan() {
            serializer.serialize_str("nan")
        } else if *value > 0.0 {
            serializer.serialize_str("inf")
        } else {
            serializer.serialize_str("-inf")
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        deserializer.deserialize_any(FloatVisitor)
    }

    struct FloatVisitor;

    impl<'de> Visitor<'de> for FloatVisitor {
        type Value = f64;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a number, or \"inf\", \"-inf\" or \"nan\"")
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_unit<E: de::Error>(self) -> Result<f64, E> {
            Ok(f64::NAN)
        }
        fn visit_none<E: de::Error>(self) -> Result<f64, E> {
            Ok(f64::NAN)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
            match v.trim().to_ascii_lowercase().as_str() {
                "inf" | "+inf" | "infinity" | ".inf" | "+.inf" => Ok(f64::INFINITY),
                "-inf" | "-infinity" | "-.inf" => Ok(f64::NEG_INFINITY),
                "nan" | ".nan" => Ok(f64::NAN),
                other => other
                    .parse()
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self)),
            }
        }
    }

    /// A plain f64 wrapper so containers can reuse the same encoding.
    #[derive(Clone, Copy)]
    struct Float(f64);

    impl Serialize for Float {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serialize(&self.0, serializer)
        }
    }

    impl<'de> Deserialize<'de> for Float {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserialize(deserializer).map(Float)
        }
    }

    /// `Option<f64>`: `None` is `null`, a present non-finite value is a string.
    pub mod option {
        use super::Float;
        use serde::{Deserialize, Deserializer, Serialize, Serializer};

        pub fn serialize<S: Serializer>(value: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
            value.map(Float).serialize(s)
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
            Ok(Option::<Float>::deserialize(d)?.map(|f| f.0))
        }
    }

    /// `Vec<f64>`.
    pub mod vec {
        use super::Float;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(values: &[f64], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(values.iter().copied().map(Float))
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
            Ok(Vec::<Float>::deserialize(d)?
                .into_iter()
                .map(|f| f.0)
                .collect())
        }
    }

    /// `Option<(f64, f64)>`.
    pub mod option_pair {
        use super::Float;
        use serde::{Deserialize, Deserializer, Serialize, Serializer};

        pub fn serialize<S: Serializer>(
            value: &Option<(f64, f64)>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            value.map(|(lo, hi)| (Float(lo), Float(hi))).serialize(s)
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<(f64, f64)>, D::Error> {
            Ok(Option::<(Float, Float)>::deserialize(d)?.map(|(lo, hi)| (lo.0, hi.0)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_cmp(a: &[f32], b: &[f32]) -> CheckMetrics {
        compare(a, b, CompareDtype::F32).unwrap()
    }

    #[test]
    fn identical_vectors_are_exact() {
        let v = [1.0f32, -2.5, 0.0, 3.0e-20, 1.0e30];
        let m = f32_cmp(&v, &v);
        assert_eq!(m.n, 5);
        assert_eq!(m.exact_matches, 5);
        assert_eq!((m.pe, m.pm, m.pw), (0.0, 0.0, 1.0));
        assert_eq!((m.mean_abs, m.max_abs, m.rel_l2), (0.0, 0.0, 0.0));
        assert!((m.cosine - 1.0).abs() < 1e-15);
        assert_eq!((m.ulp_mean, m.ulp_median), (0.0, 0.0));
        assert_eq!(m.count_le_0_2 + m.count_gt_0_2, 0);
        assert_eq!(m.non_finite, 0);
    }

    #[test]
    fn hand_computed_vector() {
        // Δ = [0, 0.25, 6, -1e-6]; b = [1, 2, 4, 1]
        let a = [1.0f32, 2.25, 10.0, 1.0 - 1e-6];
        let b = [1.0f32, 2.0, 4.0, 1.0];
        let m = f32_cmp(&a, &b);
        let d3 = (1.0f32 - 1e-6) as f64 - 1.0; // exact f32 value of the last Δ
        assert_eq!(m.exact_matches, 1);
        // exponents: 1 vs 1 same; 2.25 vs 2 same; 10 (2^3) vs 4 (2^2) differ; 0.999999 (2^-1) vs 1 differ
        assert_eq!(m.pe, 0.5);
        // |Δ| > 1e-5: 0.25 and 6
        assert_eq!(m.pm, 0.5);
        // |Δ| < 1e-7: only the exact one
        assert_eq!(m.pw, 0.25);
        assert!((m.mean_abs - (0.25 + 6.0 + d3.abs()) / 4.0).abs() < 1e-15);
        assert_eq!(m.max_abs, 6.0);
        assert_eq!(m.count_gt_0_2, 2);
        assert_eq!(m.count_le_0_2, 1);
        assert_eq!(m.count_gt_5, 1);
        assert_eq!(m.count_0_2_to_5, 1);
        let diff_sq = 0.25f64.powi(2) + 36.0 + d3 * d3;
        let rel = (diff_sq / (1.0 + 4.0 + 16.0 + 1.0)).sqrt();
        assert!((m.rel_l2 - rel).abs() < 1e-12);
        let a64: Vec<f64> = a.iter().map(|&x| x as f64).collect();
        let dot = a64[0] + 2.0 * a64[1] + 4.0 * a64[2] + a64[3];
        let na = a64.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((m.cosine - dot / (na * 22f64.sqrt())).abs() < 1e-12);
        // ULPs over exponent-matching elements: Δ 0 at 1.0 and 0.25 at 2.0 (ulp 2^-22): 0 and 2^20
        assert_eq!(m.ulp_median, (0.0 + 1048576.0) / 2.0);
        assert_eq!(m.ulp_mean, 1048576.0 / 2.0);
    }

    #[test]
    fn signed_zeros_are_exact_matches() {
        let m = f32_cmp(&[0.0, -0.0], &[-0.0, 0.0]);
        assert_eq!(m.exact_matches, 2);
        assert_eq!(m.pe, 0.0);
        assert_eq!(m.rel_l2, 0.0);
        assert_eq!(m.cosine, 1.0);
        assert_eq!(m.pw, 1.0);
    }

    #[test]
    fn zero_reference_gives_infinite_rel_l2() {
        let m = f32_cmp(&[1.0, 0.0], &[0.0, 0.0]);
        assert_eq!(m.rel_l2, f64::INFINITY);
        assert_eq!(m.cosine, 0.0);
        assert_eq!(m.non_finite, 0);
    }

    #[test]
    fn non_finite_elements_are_conservative() {
        let clean = f32_cmp(&[1.0, 2.0, 3.0, 4.0], &[1.5, 2.0, 3.0, 4.0]);
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            // Even a bit-identical non-finite element (inf vs inf) must not help.
            for (a, b) in [
                ([bad, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]),
                ([bad, 2.0, 3.0, 4.0], [bad, 2.0, 3.0, 4.0]),
            ] {
                let m = f32_cmp(&a, &b);
                assert_eq!(m.non_finite, 1);
                assert_eq!(m.exact_matches, 3);
                assert_eq!(m.pe, 0.25);
                assert_eq!(m.pm, 0.25);
                assert_eq!(m.pw, 0.75);
                assert_eq!(m.count_gt_0_2, 1);
                assert_eq!(m.count_gt_5, 1);
                assert_eq!(m.mean_abs, f64::INFINITY);
                assert_eq!(m.max_abs, f64::INFINITY);
                assert_eq!(m.rel_l2, f64::INFINITY);
                assert_eq!(m.ulp_mean, f64::INFINITY);
                assert_eq!(m.cosine, -1.0);
                assert!(m.mean_abs >= clean.mean_abs && m.rel_l2 >= clean.rel_l2);
                assert!(m.cosine <= clean.cosine);
            }
        }
        // NaN in the verifier's vector counts too.
        let m = f32_cmp(&[1.0], &[f32::NAN]);
        assert_eq!((m.non_finite, m.pe, m.pw), (1, 1.0, 0.0));
    }

    #[test]
    fn subnormals() {
        let tiny = f32::from_bits(1); // 2^-149, the smallest f32 subnormal
        let m = f32_cmp(&[tiny * 3.0], &[tiny]);
        // Both subnormal: exponent field 0 on both sides, so they "match"; Δ = 2 f32 ULPs.
        assert_eq!(m.pe, 0.0);
        assert_eq!(m.ulp_mean, 2.0);
        assert_eq!(m.exact_matches, 0);
        assert_eq!(m.pw, 1.0);
        // Subnormal vs smallest normal: exponent fields 0 vs 1 differ.
        let m = f32_cmp(&[f32::MIN_POSITIVE], &[f32::MIN_POSITIVE - tiny]);
        assert_eq!(m.pe, 1.0);
        assert_eq!(m.ulp_mean, 0.0);
    }

    #[test]
    fn ulps_in_half_formats() {
        // At 1.0: f16 ulp 2^-10, bf16 ulp 2^-7.
        let a = [1.0f32 + 3.0 / 1024.0];
        let b = [1.0f32];
        assert_eq!(compare(&a, &b, CompareDtype::F16).unwrap().ulp_mean, 3.0);
        assert_eq!(
            compare(&a, &b, CompareDtype::Bf16).unwrap().ulp_mean,
            3.0 / 8.0
        );
        // At 2^-20 (below f16's smallest normal 2^-14): f16 spacing is 2^-24.
        let b = [2f32.powi(-20)];
        let a = [2f32.powi(-20) + 2f32.powi(-23)];
        assert_eq!(compare(&a, &b, CompareDtype::F16).unwrap().ulp_mean, 2.0);
        // bf16 has f32's exponent range: spacing at 2^-20 is 2^-27.
        assert_eq!(compare(&a, &b, CompareDtype::Bf16).unwrap().ulp_mean, 16.0);
        assert_eq!(CompareDtype::F16.ulp_at(0.0), 2f64.powi(-24));
        assert_eq!(CompareDtype::F32.ulp_at(0.0), 2f64.powi(-149));
        assert_eq!(CompareDtype::Bf16.ulp_at(-3.0), 2f64.powi(1 - 7));
    }

    #[test]
    fn ulp_stats_are_zero_when_no_exponent_matches() {
        let m = f32_cmp(&[1.0, 4.0], &[2.0, 8.0]);
        assert_eq!(m.pe, 1.0);
        assert_eq!((m.ulp_mean, m.ulp_median), (0.0, 0.0));
    }

    #[test]
    fn errors() {
        assert_eq!(
            compare(&[1.0], &[1.0, 2.0], CompareDtype::F32),
            Err(StatsError::LengthMismatch {
                committed: 1,
                recomputed: 2
            })
        );
        assert_eq!(compare(&[], &[], CompareDtype::F32), Err(StatsError::Empty));
        let msg = StatsError::LengthMismatch {
            committed: 1,
            recomputed: 2,
        }
        .to_string();
        assert!(msg.contains('1') && msg.contains('2'));
    }

    #[test]
    fn dtype_names() {
        assert_eq!(CompareDtype::from_name("f32"), Some(CompareDtype::F32));
        assert_eq!(CompareDtype::from_name("f16"), Some(CompareDtype::F16));
        assert_eq!(CompareDtype::from_name("bf16"), Some(CompareDtype::Bf16));
        for other in ["F16", "bfloat16", "float32", " f32", "q8"] {
            assert_eq!(CompareDtype::from_name(other), None, "{other}");
        }
        for d in [CompareDtype::F32, CompareDtype::F16, CompareDtype::Bf16] {
            assert_eq!(CompareDtype::from_name(d.name()), Some(d));
        }
        assert_eq!(
            CompareDtype::coarsest(CompareDtype::F32, CompareDtype::Bf16),
            CompareDtype::Bf16
        );
        assert_eq!(
            CompareDtype::coarsest(CompareDtype::F16, CompareDtype::F32),
            CompareDtype::F16
        );
        assert_eq!(
            CompareDtype::coarsest(CompareDtype::Bf16, CompareDtype::F16),
            CompareDtype::Bf16
        );
    }

    #[test]
    fn metrics_round_trip_through_json_with_infinities() {
        let m = f32_cmp(&[f32::NAN, 1.0], &[1.0, 1.0]);
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.contains("\"inf\""), "{json}");
        let back: CheckMetrics = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        let yaml = serde_yaml::to_string(&m).unwrap();
        let back: CheckMetrics = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(back, m);
        // serde_json's own encoding of non-finite floats (null) reads back as NaN.
        let with_null = json.replace("\"inf\"", "null");
        let back: CheckMetrics = serde_json::from_str(&with_null).unwrap();
        assert!(back.rel_l2.is_nan());
    }
}
