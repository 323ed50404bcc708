//! The policy snippet an optimization writes: for each precision tier the `rel_l2_max` and
//! `pe_max` that separate its honest checks from its cheat checks, rounded so that rounding
//! never rejects an honest check the recommendation accepted, with the reasons as comments.

use super::*;

/// Smallest Pe limit written for a rule that accepts only `pe < limit` when the data asks for
/// "Pe = 0 only": any real Pe is a count over a row of at most millions of elements, so a
/// positive Pe is far above it.
pub const STRICT_ZERO_PE: f64 = 1e-9;

/// How a policy compares a metric with its limit: `value <= t` (precision_aware) or the seed
/// rule's `value < t`. A limit that is right for one can be off by its edge for the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Comparison {
    AtMost,
    Below,
}

/// A threshold as YAML text, plain notation for ordinary magnitudes, exponent notation
/// otherwise. It is rounded to 3 significant digits unless that would leave the zero-error
/// interval (under `comparison`: an honest check at the interval's low edge must still pass)
/// or, without an interval, tighten the limit.
pub(super) fn format_threshold(
    value: f64,
    interval: Option<(f64, f64)>,
    comparison: Comparison,
) -> String {
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
pub(super) fn yaml_threshold(
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
pub(super) fn conjunctive_thresholds(
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
pub(super) fn recommended_policy_yaml(
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
        crate::stats::policy::SEED_MEAN_EPSILON_DEFAULT,
        find("pe"),
        crate::stats::policy::SEED_PE_MAX_DEFAULT,
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
