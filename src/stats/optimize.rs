//! Threshold optimization: compare the distributions of each metric over honest and cheating
//! checks, and recommend per-check thresholds that separate them.
//!
//! Direction: every metric in [`METRICS`] is "higher = worse" except `pw` (the fraction of tiny
//! deviations) and `cosine` (similarity): higher = better. The generic functions ([`auc`],
//! [`roc_curve`], [`zero_error_interval`]) take "higher = more suspicious" values; the report
//! negates those two before calling them and converts results back to their units, so for
//! every metric an AUC of 1 means perfect detection. NaN values are ranked as the most suspicious.

use serde::{Deserialize, Serialize};

use super::aggregate::{percentile_of_sorted, sorted_worst_last, Distribution};
use super::metrics::{CheckMetrics, CompareDtype};
use super::policy::{BF16_TIER_DEFAULT, F16_TIER_DEFAULT, F32_TIER_DEFAULT};

// The YAML policy snippet: which thresholds are written, rounded how, with what comments.
#[path = "optimize_snippet.rs"]
mod snippet;
use snippet::*;
pub use snippet::{MIN_RELAXED_PE, STRICT_ZERO_PE};

/// Everything an optimization run found, ready to serialize and to plot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizationReport {
    pub experiments: Vec<String>,
    /// Trials run for each experiment.
    pub trials: usize,
    pub metrics: Vec<MetricReport>,
    pub accept_rates: AcceptRateReport,
    /// YAML snippet to paste into experiments.yaml
    pub recommended_yaml: String,
    /// The limits the snippet recommends for each measured precision tier, from that tier's
    /// checks alone; empty when the checks' tiers were not known (then the snippet repeats the
    /// pooled recommendation under every tier). Figures draw these, so they show what the
    /// snippet says.
    #[serde(default)]
    pub tiers: Vec<TierRecommendation>,
}

/// What the snippet recommends for one precision tier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TierRecommendation {
    /// "f32", "f16" or "bf16".
    pub tier: String,
    pub honest_checks: usize,
    pub cheat_checks: usize,
    pub rel_l2_max: f64,
    pub pe_max: f64,
}

/// How one metric separates honest checks from cheating ones.
///
/// For `pw` (higher = better) `auc` is P(cheat pw < honest pw), `zero_error_interval` is
/// (max cheat, min honest) with the rule ACCEPT iff pw ≥ t, and the ROC sweeps t downwards
/// in that sense. For all other metrics the rule is ACCEPT iff value ≤ t.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricReport {
    /// "pe", "pm", "pw", "mean_abs", "max_abs", "rel_l2", "cosine", "ulp_mean" or "ulp_median".
    pub metric: String,
    pub honest: Option<Distribution>,
    pub cheat: Option<Distribution>,
    /// P(cheat value > honest value), ties count 1/2; None unless both present.
    #[serde(with = "super::metrics::float_serde::option")]
    pub auc: Option<f64>,
    /// Thresholds t with honest <= t < cheat for all values; None if none exists.
    #[serde(with = "super::metrics::float_serde::option_pair")]
    pub zero_error_interval: Option<(f64, f64)>,
    /// See [`recommend_threshold`] for how it is chosen.
    #[serde(with = "super::metrics::float_serde::option")]
    pub recommended_threshold: Option<f64>,
    /// (false positive rate, true positive rate) points, from (0,0) to (1,1); empty unless both
    /// sides have values; thinned to at most [`MAX_ROC_POINTS`].
    pub roc: Vec<(f64, f64)>,
    /// Raw values (subsampled deterministically to at most 20000) for histograms.
    /// Sorted ascending (the subsample keeps evenly spaced order statistics, min and max
    /// included); may contain ±inf and NaN from checks with non-finite elements.
    #[serde(with = "super::metrics::float_serde::vec")]
    pub honest_values: Vec<f64>,
    #[serde(with = "super::metrics::float_serde::vec")]
    pub cheat_values: Vec<f64>,
}

/// Per-run accept rates of honest and cheating runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AcceptRateReport {
    #[serde(with = "super::metrics::float_serde::vec")]
    pub honest: Vec<f64>,
    #[serde(with = "super::metrics::float_serde::vec")]
    pub cheat: Vec<f64>,
    pub honest_stats: Option<Distribution>,
    pub cheat_stats: Option<Distribution>,
}

/// The metrics a report covers, in report order.
pub const METRICS: &[&str] = &[
    "pe",
    "pm",
    "pw",
    "mean_abs",
    "max_abs",
    "rel_l2",
    "cosine",
    "ulp_mean",
    "ulp_median",
];

/// Most raw values kept per side for histograms.
pub const MAX_RAW_VALUES: usize = 20_000;

/// Most ROC points kept per metric (the AUC is always computed from all values).
pub const MAX_ROC_POINTS: usize = 2_001;

/// Smallest threshold written into YAML, because policies require thresholds > 0 and a
/// threshold of exactly 0 would reject any honest rounding difference.
pub const MIN_YAML_THRESHOLD: f64 = 1e-12;

/// One metric of a check by name; None for an unknown name.
pub fn metric_value(m: &CheckMetrics, metric: &str) -> Option<f64> {
    Some(match metric {
        "pe" => m.pe,
        "pm" => m.pm,
        "pw" => m.pw,
        "mean_abs" => m.mean_abs,
        "max_abs" => m.max_abs,
        "rel_l2" => m.rel_l2,
        "cosine" => m.cosine,
        "ulp_mean" => m.ulp_mean,
        "ulp_median" => m.ulp_median,
        _ => return None,
    })
}

/// Whether larger values of `metric` mean a worse match (all but `pw` and `cosine`).
pub fn higher_is_worse(metric: &str) -> bool {
    !matches!(metric, "pw" | "cosine")
}

/// Values oriented so that higher = more suspicious, NaN = most suspicious.
fn oriented(values: &[f64], higher_worse: bool) -> Vec<f64> {
    values
        .iter()
        .map(|&v| match (v.is_nan(), higher_worse) {
            (true, _) => f64::INFINITY,
            (false, true) => v,
            (false, false) => -v,
        })
        .collect()
}

/// Area under the ROC curve = P(cheat > honest) + ½·P(cheat = honest), for "higher = more
/// suspicious" values (NaN counts as +inf). 0.5 (no evidence either way) when a side is empty.
/// O((h + c) log h): sort honest values once, then two binary searches per cheat value.
pub fn auc(honest: &[f64], cheat: &[f64]) -> f64 {
    if honest.is_empty() || cheat.is_empty() {
        return 0.5;
    }
    let honest_sorted = sorted_worst_last(honest);
    let mut below: u128 = 0;
    let mut ties: u128 = 0;
    for &c in cheat {
        let c = if c.is_nan() { f64::INFINITY } else { c };
        let less = honest_sorted.partition_point(|&h| h < c);
        let less_or_equal = honest_sorted.partition_point(|&h| h <= c);
        below += less as u128;
        ties += (less_or_equal - less) as u128;
    }
    (below as f64 + ties as f64 / 2.0) / (honest.len() as f64 * cheat.len() as f64)
}

/// ROC curve of the rule "REJECT iff value ≥ t" swept from t = +∞ down to the smallest value:
/// (false positive rate = honest rejected, true positive rate = cheat rejected), starting at
/// (0,0) and ending at (1,1), one point per distinct value. Empty when a side is empty.
pub fn roc_curve(honest: &[f64], cheat: &[f64]) -> Vec<(f64, f64)> {
    if honest.is_empty() || cheat.is_empty() {
        return Vec::new();
    }
    let mut honest_desc = sorted_worst_last(honest);
    let mut cheat_desc = sorted_worst_last(cheat);
    honest_desc.reverse();
    cheat_desc.reverse();
    let (nh, nc) = (honest_desc.len() as f64, cheat_desc.len() as f64);
    let (mut hi, mut ci) = (0usize, 0usize);
    let mut points = vec![(0.0, 0.0)];
    while hi < honest_desc.len() || ci < cheat_desc.len() {
        // The next distinct threshold: the largest value not yet rejected on either side
        // (an exhausted side offers -inf, which never wins unless both are at -inf).
        let next_h = honest_desc.get(hi).copied().unwrap_or(f64::NEG_INFINITY);
        let next_c = cheat_desc.get(ci).copied().unwrap_or(f64::NEG_INFINITY);
        let t = next_h.max(next_c);
        while hi < honest_desc.len() && honest_desc[hi] >= t {
            hi += 1;
        }
        while ci < cheat_desc.len() && cheat_desc[ci] >= t {
            ci += 1;
        }
        points.push((hi as f64 / nh, ci as f64 / nc));
    }
    points
}

/// The thresholds t with every honest value ≤ t < every cheat value, as
/// (max honest, min cheat): any t in [lo, hi) makes zero errors with "ACCEPT iff value ≤ t".
/// None when the sides overlap or touch, or either is empty. NaN counts as +inf.
pub fn zero_error_interval(honest: &[f64], cheat: &[f64]) -> Option<(f64, f64)> {
    let worst_honest = honest
        .iter()
        .map(|&v| if v.is_nan() { f64::INFINITY } else { v })
        .reduce(f64::max)?;
    let best_cheat = cheat
        .iter()
        .map(|&v| if v.is_nan() { f64::INFINITY } else { v })
        .reduce(f64::min)?;
    (worst_honest < best_cheat).then_some((worst_honest, best_cheat))
}

/// A threshold inside (lo, hi): the geometric midpoint when lo > 0 (errors span decades, so
/// "halfway" is multiplicative), the arithmetic one when lo ≤ 0; when hi is +inf (every cheat
/// check non-finite), 2·lo, or 1 if lo ≤ 0.
fn interval_midpoint(lo: f64, hi: f64) -> f64 {
    if hi == f64::INFINITY {
        if lo > 0.0 {
            2.0 * lo
        } else {
            1.0
        }
    } else if lo > 0.0 {
        (lo * hi).sqrt()
    } else {
        (lo + hi) / 2.0
    }
}

/// How a recommended threshold was chosen (said in the YAML comments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdBasis {
    /// Midpoint of the zero-error interval: no measured check is misclassified.
    ZeroErrorMidpoint,
    /// The sides overlap: the honest p99 (in the worse direction), so about 1% of honest
    /// checks are rejected and some cheat checks accepted; the accept rate must decide.
    HonestP99,
    /// No cheat data: twice the worst honest value (for pw: half the lowest), a margin with no
    /// evidence about what it rejects.
    HonestOnly,
}

/// Recommended threshold for one metric in its own units, with how it was chosen.
/// None without honest data. For `pw` the rule is ACCEPT iff pw ≥ t, else ACCEPT iff value ≤ t.
pub fn recommend_threshold(
    metric: &str,
    honest: &[f64],
    cheat: &[f64],
) -> Option<(f64, ThresholdBasis)> {
    if honest.is_empty() {
        return None;
    }
    let higher_worse = higher_is_worse(metric);
    let to_units = |v: f64| if higher_worse { v } else { -v };
    if cheat.is_empty() {
        let worst = sorted_worst_last(&oriented(honest, higher_worse))
            .last()
            .copied()?;
        let worst = to_units(worst);
        let margin = if higher_worse {
            worst * 2.0
        } else {
            worst / 2.0
        };
        return Some((margin, ThresholdBasis::HonestOnly));
    }
    let (honest_o, cheat_o) = (
        oriented(honest, higher_worse),
        oriented(cheat, higher_worse),
    );
    if let Some((lo, hi)) = zero_error_interval(&honest_o, &cheat_o) {
        let (lo, hi) = if higher_worse { (lo, hi) } else { (-hi, -lo) };
        return Some((interval_midpoint(lo, hi), ThresholdBasis::ZeroErrorMidpoint));
    }
    let p99 = percentile_of_sorted(&sorted_worst_last(&honest_o), 99.0);
    Some((to_units(p99), ThresholdBasis::HonestP99))
}

/// Evenly spaced order statistics of `values` (min and max included), at most `limit` of
/// them, ascending: deterministic and keeps the histogram's shape.
pub fn subsample_sorted(values: &[f64], limit: usize) -> Vec<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    if sorted.len() <= limit {
        return sorted;
    }
    if limit <= 1 {
        return sorted.into_iter().take(limit).collect();
    }
    let last = (sorted.len() - 1) as f64;
    (0..limit)
        .map(|i| sorted[(i as f64 * last / (limit - 1) as f64).round() as usize])
        .collect()
}

/// Keep at most `limit` points of a curve, evenly spaced by index, endpoints included.
fn thin_curve(points: Vec<(f64, f64)>, limit: usize) -> Vec<(f64, f64)> {
    if points.len() <= limit || limit < 2 {
        return points;
    }
    let last = (points.len() - 1) as f64;
    (0..limit)
        .map(|i| points[(i as f64 * last / (limit - 1) as f64).round() as usize])
        .collect()
}

/// The full comparison of one metric between honest and cheating values (in metric units).
pub fn metric_report(metric: &str, honest: &[f64], cheat: &[f64]) -> MetricReport {
    let higher_worse = higher_is_worse(metric);
    let (honest_o, cheat_o) = (
        oriented(honest, higher_worse),
        oriented(cheat, higher_worse),
    );
    let both = !honest.is_empty() && !cheat.is_empty();
    let zero_error = zero_error_interval(&honest_o, &cheat_o).map(|(lo, hi)| {
        if higher_worse {
            (lo, hi)
        } else {
            (-hi, -lo)
        }
    });
    MetricReport {
        metric: metric.to_string(),
        honest: Distribution::from_values(honest),
        cheat: Distribution::from_values(cheat),
        auc: both.then(|| auc(&honest_o, &cheat_o)),
        zero_error_interval: zero_error,
        recommended_threshold: recommend_threshold(metric, honest, cheat).map(|(t, _)| t),
        roc: thin_curve(roc_curve(&honest_o, &cheat_o), MAX_ROC_POINTS),
        honest_values: subsample_sorted(honest, MAX_RAW_VALUES),
        cheat_values: subsample_sorted(cheat, MAX_RAW_VALUES),
    }
}

/// Compare honest and cheating checks on every metric in [`METRICS`], summarize per-run accept
/// rates, and write a policy snippet. The snippet puts the same recommendation under all three
/// tiers (the checks do not say which precision pair they came from); use
/// [`build_report_by_tier`] to recommend each tier's thresholds from its own checks.
pub fn build_report(
    experiments: Vec<String>,
    trials: usize,
    honest_checks: &[CheckMetrics],
    cheat_checks: &[CheckMetrics],
    honest_accept_rates: &[f64],
    cheat_accept_rates: &[f64],
) -> OptimizationReport {
    build_report_with(
        experiments,
        trials,
        honest_checks,
        cheat_checks,
        honest_accept_rates,
        cheat_accept_rates,
        None,
    )
}

/// The checks of one precision tier (the pairs judged at that tier's limits), from which its
/// thresholds are recommended.
pub struct TierChecks<'a> {
    pub tier: CompareDtype,
    pub honest: &'a [CheckMetrics],
    pub cheat: &'a [CheckMetrics],
}

/// What the snippet's recommendation for one tier stands on.
struct TierMeasure {
    tier: CompareDtype,
    metrics: Vec<MetricReport>,
    counts: (usize, usize),
}

/// [`build_report`], with each tier's thresholds recommended from that tier's checks alone:
/// honest f32 drift (1e-6) and bf16 drift (1e-2) pooled would give f32 a limit 250× too loose.
/// Tiers without checks keep their defaults. The report's metrics, ROC and histograms still
/// describe all checks together.
pub fn build_report_by_tier(
    experiments: Vec<String>,
    trials: usize,
    honest_checks: &[CheckMetrics],
    cheat_checks: &[CheckMetrics],
    honest_accept_rates: &[f64],
    cheat_accept_rates: &[f64],
    tiers: &[TierChecks<'_>],
) -> OptimizationReport {
    let measured: Vec<TierMeasure> = tiers
        .iter()
        .map(|t| TierMeasure {
            tier: t.tier,
            metrics: ["rel_l2", "pe"]
                .iter()
                .map(|&metric| {
                    metric_report(
                        metric,
                        &metric_values(t.honest, metric),
                        &metric_values(t.cheat, metric),
                    )
                })
                .collect(),
            counts: (t.honest.len(), t.cheat.len()),
        })
        .collect();
    build_report_with(
        experiments,
        trials,
        honest_checks,
        cheat_checks,
        honest_accept_rates,
        cheat_accept_rates,
        Some(&measured),
    )
}

fn metric_values(checks: &[CheckMetrics], metric: &str) -> Vec<f64> {
    checks
        .iter()
        .filter_map(|m| metric_value(m, metric))
        .collect()
}

/// The report; `tiers` None: the checks' tiers are unknown, so the pooled recommendation is
/// written under every tier.
fn build_report_with(
    experiments: Vec<String>,
    trials: usize,
    honest_checks: &[CheckMetrics],
    cheat_checks: &[CheckMetrics],
    honest_accept_rates: &[f64],
    cheat_accept_rates: &[f64],
    tiers: Option<&[TierMeasure]>,
) -> OptimizationReport {
    let metrics: Vec<MetricReport> = METRICS
        .iter()
        .map(|&metric| {
            metric_report(
                metric,
                &metric_values(honest_checks, metric),
                &metric_values(cheat_checks, metric),
            )
        })
        .collect();
    let accept_rates = AcceptRateReport {
        honest: honest_accept_rates.to_vec(),
        cheat: cheat_accept_rates.to_vec(),
        honest_stats: Distribution::from_values(honest_accept_rates),
        cheat_stats: Distribution::from_values(cheat_accept_rates),
    };
    let (recommended_yaml, tiers) = recommended_policy_yaml(
        &experiments,
        trials,
        (honest_checks.len(), cheat_checks.len()),
        &metrics,
        &accept_rates,
        tiers,
    );
    OptimizationReport {
        experiments,
        trials,
        metrics,
        accept_rates,
        recommended_yaml,
        tiers,
    }
}

#[cfg(test)]
#[path = "optimize_tests.rs"]
mod tests;
