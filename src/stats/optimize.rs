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

/// Smallest Pe limit written for a rule that accepts only `pe < limit` when the data asks for
/// "Pe = 0 only": any real Pe is a count over a row of at most millions of elements, so a
/// positive Pe is far above it.
pub const STRICT_ZERO_PE: f64 = 1e-9;

/// How a policy compares a metric with its limit: `value <= t` (precision_aware) or the seed
/// rule's `value < t`. A limit that is right for one can be off by its edge for the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparison {
    AtMost,
    Below,
}

/// A threshold as YAML text, plain notation for ordinary magnitudes, exponent notation
/// otherwise. It is rounded to 3 significant digits unless that would leave the zero-error
/// interval (under `comparison`: an honest check at the interval's low edge must still pass)
/// or, without an interval, tighten the limit.
fn format_threshold(value: f64, interval: Option<(f64, f64)>, comparison: Comparison) -> String {
    let rounded: f64 = format!("{value:.2e}").parse().unwrap_or(value);
    let inside = |t: f64| {
        interval.is_none_or(|(lo, hi)| {
            let above_lo = match comparison {
                Comparison::AtMost => lo <= t,
                Comparison::Below => lo < t,
            };
            above_lo && t < hi
        })
    };
    // Every limit written here is an upper one (`value <= t` or `< t`): without an interval,
    // rounding may only loosen it, never reject honest checks the recommendation accepted.
    let chosen = if inside(rounded) && (interval.is_some() || rounded >= value) {
        rounded
    } else {
        value
    };
    if chosen == 0.0 || (1e-3..1e4).contains(&chosen.abs()) {
        format!("{chosen}")
    } else {
        format!("{chosen:e}")
    }
}

/// One threshold for the YAML: (text, comment), falling back to `default` when there is no
/// usable recommendation, and clamped into what policies accept.
fn yaml_threshold(
    report: Option<&MetricReport>,
    default: f64,
    is_fraction: bool,
    comparison: Comparison,
) -> (String, String) {
    let name = report.map_or("?", |r| r.metric.as_str());
    let Some(report) = report else {
        return (
            format_threshold(default, None, Comparison::AtMost),
            format!("{name}: no data, default kept"),
        );
    };
    let Some(threshold) = report.recommended_threshold.filter(|t| t.is_finite()) else {
        return (
            format_threshold(default, None, Comparison::AtMost),
            format!("{name}: no usable recommendation (no honest data or infinite), default kept"),
        );
    };
    let basis = if let Some((lo, hi)) = report.zero_error_interval {
        format!(
            "zero-error interval [{}, {}), geometric midpoint (arithmetic if it starts at 0)",
            format_threshold(lo, None, Comparison::AtMost),
            format_threshold(hi, None, Comparison::AtMost)
        )
    } else if report.cheat.is_some() {
        "NO zero-error interval: honest p99, so ~1% of honest checks are rejected and some \
         cheat checks accepted; the accept rate must separate them"
            .to_string()
    } else {
        "no cheat data: 2 x worst honest value, a margin with no evidence about cheats".to_string()
    };
    let honest_only = report.zero_error_interval.is_none() && report.cheat.is_none();
    let clamped = if is_fraction {
        // A Pe limit of 0 means "Pe = 0 only": a margin with no evidence (no cheat data) is
        // kept usable instead, and the seed rule's strict `<` needs a positive limit for it.
        match threshold.clamp(0.0, 1.0) {
            0.0 if honest_only => MIN_RELAXED_PE,
            0.0 if comparison == Comparison::Below => STRICT_ZERO_PE,
            t => t,
        }
    } else {
        threshold.max(MIN_YAML_THRESHOLD)
    };
    let interval = (clamped == threshold)
        .then_some(report.zero_error_interval)
        .flatten();
    (
        format_threshold(clamped, interval, comparison),
        format!("{name}: {basis}"),
    )
}

/// Smallest relaxed Pe limit (about 6 of 576 elements), so a relaxed limit stays usable with
/// the seed rule's strict `<` even when no honest check had any exponent mismatch.
pub const MIN_RELAXED_PE: f64 = 0.01;

/// Thresholds for a conjunctive two-metric rule (`magnitude` = rel_l2 or mean_abs, plus pe),
/// as YAML text with comments. A rule rejects when *either* limit is exceeded, so a metric
/// that does not separate (no zero-error interval) only adds honest rejections when its
/// partner does separate: it is then relaxed to 2 × its honest maximum (Pe capped at 1 and at
/// least [`MIN_RELAXED_PE`]) and rejects no measured honest check.
fn conjunctive_thresholds(
    magnitude: Option<&MetricReport>,
    magnitude_default: f64,
    pe: Option<&MetricReport>,
    pe_default: f64,
    comparison: Comparison,
) -> [(String, String); 2] {
    let separates = |r: Option<&MetricReport>| r.is_some_and(|r| r.zero_error_interval.is_some());
    let honest_max = |r: Option<&MetricReport>| {
        r.and_then(|r| r.honest.as_ref())
            .map(|d| d.max)
            .filter(|m| m.is_finite())
    };
    let relaxed = |r: Option<&MetricReport>, partner: &str, is_fraction: bool| {
        let max = honest_max(r)?;
        let value = if is_fraction {
            (2.0 * max).clamp(MIN_RELAXED_PE, 1.0)
        } else {
            (2.0 * max).max(MIN_YAML_THRESHOLD)
        };
        let name = r.map_or("?", |r| r.metric.as_str());
        Some((
            format_threshold(value, None, Comparison::AtMost),
            format!(
                "{name}: does not separate but {partner} does: relaxed to 2 x honest max ({}) \
                 so it rejects no measured honest check",
                format_threshold(max, None, Comparison::AtMost)
            ),
        ))
    };
    let magnitude_name = magnitude.map_or("?", |r| r.metric.as_str());
    let magnitude_line = if separates(pe) && !separates(magnitude) {
        relaxed(magnitude, "pe", false)
    } else {
        None
    };
    let pe_line = if separates(magnitude) && !separates(pe) {
        relaxed(pe, magnitude_name, true)
    } else {
        None
    };
    [
        magnitude_line
            .unwrap_or_else(|| yaml_threshold(magnitude, magnitude_default, false, comparison)),
        pe_line.unwrap_or_else(|| yaml_threshold(pe, pe_default, true, comparison)),
    ]
}

/// The policy snippet of an optimization run: a `precision_aware` policy with the recommended
/// `rel_l2_max` and `pe_max` of each measured tier (from that tier's checks; every tier from
/// the pooled `metrics` when `tiers` is None), the equivalent `seed` policy (mean|Δ| and Pe)
/// as a comment, and the AUC of every metric as comments.
fn recommended_policy_yaml(
    experiments: &[String],
    trials: usize,
    (honest_count, cheat_count): (usize, usize),
    metrics: &[MetricReport],
    accept_rates: &AcceptRateReport,
    tiers: Option<&[TierMeasure]>,
) -> (String, Vec<TierRecommendation>) {
    fn find_in<'r>(reports: &'r [MetricReport], name: &str) -> Option<&'r MetricReport> {
        reports.iter().find(|r| r.metric == name)
    }
    let find = |name: &str| metrics.iter().find(|r| r.metric == name);
    let mut out = String::new();
    out.push_str(&format!(
        "# Recommended by threshold optimization over {} experiment(s) [{}], {trials} trial(s),\n\
         # {honest_count} honest and {cheat_count} cheat checks.\n",
        experiments.len(),
        experiments.join(", ")
    ));
    let defaults_of = [
        (CompareDtype::F32, F32_TIER_DEFAULT),
        (CompareDtype::F16, F16_TIER_DEFAULT),
        (CompareDtype::Bf16, BF16_TIER_DEFAULT),
    ];
    let mut tier_lines = Vec::new();
    let mut reasons = Vec::new();
    let mut recommended = Vec::new();
    for (dtype, defaults) in defaults_of {
        // The metric reports this tier's recommendation stands on, if it has one.
        let basis = match tiers {
            None => Some((metrics, None)),
            Some(measured) => measured
                .iter()
                .find(|m| m.tier == dtype)
                .map(|m| (m.metrics.as_slice(), Some(m.counts))),
        };
        let (rel_l2, pe) = match basis {
            Some((reports, counts)) => {
                let [(rel_l2, rel_reason), (pe, pe_reason)] = conjunctive_thresholds(
                    find_in(reports, "rel_l2"),
                    defaults.rel_l2_max,
                    find_in(reports, "pe"),
                    defaults.pe_max,
                    Comparison::AtMost,
                );
                if let Some((honest_checks, cheat_checks)) = counts {
                    // The values exactly as written (rounded) into the snippet.
                    if let (Ok(rel_l2_max), Ok(pe_max)) = (rel_l2.parse(), pe.parse()) {
                        recommended.push(TierRecommendation {
                            tier: dtype.name().to_string(),
                            honest_checks,
                            cheat_checks,
                            rel_l2_max,
                            pe_max,
                        });
                    }
                }
                match counts {
                    Some((honest, cheat)) => reasons.push(format!(
                        "{} tier ({honest} honest, {cheat} cheat checks): rel_l2_max <- \
                         {rel_reason}; pe_max <- {pe_reason}",
                        dtype.name()
                    )),
                    None if reasons.is_empty() => {
                        reasons.push(format!("rel_l2_max <- {rel_reason}"));
                        reasons.push(format!("pe_max <- {pe_reason}"));
                    }
                    None => {}
                }
                (rel_l2, pe)
            }
            None => (
                format_threshold(defaults.rel_l2_max, None, Comparison::AtMost),
                format_threshold(defaults.pe_max, None, Comparison::AtMost),
            ),
        };
        tier_lines.push(format!(
            "  {}: {{rel_l2_max: {rel_l2}, pe_max: {pe}}}\n",
            dtype.name()
        ));
    }
    for reason in &reasons {
        out.push_str(&format!("# {reason}\n"));
    }
    match tiers {
        None => out.push_str(
            "# Written under every tier because the checks do not say which precision pair they\n\
             # came from: keep it for the pair you measured and restore the defaults elsewhere.\n",
        ),
        Some(measured) => {
            let names: Vec<&str> = measured.iter().map(|m| m.tier.name()).collect();
            out.push_str(&format!(
                "# Each tier from its own checks ({}); tiers not measured keep their defaults.\n",
                names.join(", ")
            ));
        }
    }
    out.push_str("policy:\n  kind: precision_aware\n");
    for line in tier_lines {
        out.push_str(&line);
    }
    let [(mean_epsilon, _), (seed_pe, _)] = conjunctive_thresholds(
        find("mean_abs"),
        super::policy::SEED_MEAN_EPSILON_DEFAULT,
        find("pe"),
        super::policy::SEED_PE_MAX_DEFAULT,
        Comparison::Below,
    );
    out.push_str(&format!(
        "# The reference project's rule on the same data:\n\
         # policy: {{kind: seed, mean_epsilon: {mean_epsilon}, pe_max: {seed_pe}}}\n"
    ));
    out.push_str(
        "# AUC per metric (P(a cheat check looks worse than an honest one); 1 = perfect, 0.5 = chance):\n",
    );
    for report in metrics {
        let auc = report.auc.map_or("n/a".to_string(), |a| format!("{a:.4}"));
        let separable = if report.zero_error_interval.is_some() {
            "  (separable)"
        } else {
            ""
        };
        out.push_str(&format!("#   {:<9} {auc}{separable}\n", report.metric));
    }
    let describe = |stats: &Option<Distribution>| {
        stats.as_ref().map_or("n/a".to_string(), |d| {
            format!(
                "mean {:.4}, min {:.4}, max {:.4} over {} run(s)",
                d.mean, d.min, d.max, d.count
            )
        })
    };
    out.push_str(&format!(
        "# Accept rates: honest {}; cheat {}\n",
        describe(&accept_rates.honest_stats),
        describe(&accept_rates.cheat_stats)
    ));
    (out, recommended)
}

#[cfg(test)]
#[path = "optimize_tests.rs"]
mod tests;
