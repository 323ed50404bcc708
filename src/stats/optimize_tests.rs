//! Tests of the parent module (kept apart so the module itself stays readable).
use super::*;
use crate::stats::metrics::compare;
use crate::stats::policy::PolicyConfig;

/// Deterministic pseudo-random values in [0, 1) (a 64-bit LCG), for brute-force checks.
fn lcg_values(seed: u64, n: usize, buckets: u64) -> Vec<f64> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) % buckets) as f64 / buckets as f64
        })
        .collect()
}

fn brute_force_auc(honest: &[f64], cheat: &[f64]) -> f64 {
    let mut score = 0.0;
    for &c in cheat {
        for &h in honest {
            score += if c > h {
                1.0
            } else if c == h {
                0.5
            } else {
                0.0
            };
        }
    }
    score / (honest.len() * cheat.len()) as f64
}

fn trapezoid_area(curve: &[(f64, f64)]) -> f64 {
    curve
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0)
        .sum()
}

#[test]
fn auc_basic_cases() {
    assert_eq!(auc(&[1.0, 2.0], &[3.0, 4.0]), 1.0);
    assert_eq!(auc(&[3.0, 4.0], &[1.0, 2.0]), 0.0);
    assert_eq!(auc(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]), 0.5);
    assert_eq!(auc(&[5.0; 4], &[5.0; 3]), 0.5);
    // honest [1,2,3], cheat [2,4]: c=2 beats 1, ties 2 -> 1.5; c=4 beats all -> 3. 4.5/6
    assert_eq!(auc(&[1.0, 2.0, 3.0], &[2.0, 4.0]), 0.75);
    assert_eq!(auc(&[], &[1.0]), 0.5);
    // NaN is the most suspicious value.
    assert_eq!(auc(&[1.0], &[f64::NAN]), 1.0);
    assert_eq!(auc(&[f64::INFINITY], &[f64::NAN]), 0.5);
}

#[test]
fn auc_matches_brute_force_and_roc_area() {
    // Few buckets, so there are many ties.
    let honest = lcg_values(1, 300, 40);
    let cheat: Vec<f64> = lcg_values(2, 200, 40).iter().map(|v| v + 0.2).collect();
    let fast = auc(&honest, &cheat);
    assert!((fast - brute_force_auc(&honest, &cheat)).abs() < 1e-12);
    assert!(fast > 0.6 && fast < 1.0);
    let curve = roc_curve(&honest, &cheat);
    assert!((trapezoid_area(&curve) - fast).abs() < 1e-12);
}

#[test]
fn roc_endpoints_and_monotonicity() {
    let curve = roc_curve(&[0.1, 0.2, 0.2, 0.9], &[0.2, 0.5, f64::NAN]);
    assert_eq!(curve.first(), Some(&(0.0, 0.0)));
    assert_eq!(curve.last(), Some(&(1.0, 1.0)));
    assert!(curve
        .windows(2)
        .all(|w| w[1].0 >= w[0].0 && w[1].1 >= w[0].1));
    // Perfect separation passes through (0, 1).
    let curve = roc_curve(&[0.1, 0.2], &[0.3, 0.4]);
    assert!(curve.contains(&(0.0, 1.0)));
    assert_eq!(trapezoid_area(&curve), 1.0);
    assert!(roc_curve(&[], &[1.0]).is_empty());
    let thinned = thin_curve(
        roc_curve(&lcg_values(3, 5000, 1 << 30), &lcg_values(4, 5000, 1 << 30)),
        101,
    );
    assert_eq!(thinned.len(), 101);
    assert_eq!((thinned[0], thinned[100]), ((0.0, 0.0), (1.0, 1.0)));
}

#[test]
fn zero_error_intervals() {
    assert_eq!(
        zero_error_interval(&[0.1, 0.2], &[0.5, 0.3]),
        Some((0.2, 0.3))
    );
    assert_eq!(zero_error_interval(&[0.1, 0.4], &[0.3, 0.5]), None);
    assert_eq!(zero_error_interval(&[0.1, 0.3], &[0.3, 0.5]), None); // touching: t=0.3 rejects no cheat
    assert_eq!(zero_error_interval(&[], &[0.3]), None);
    assert_eq!(zero_error_interval(&[0.1], &[]), None);
    assert_eq!(zero_error_interval(&[0.1, f64::NAN], &[0.3]), None);
    assert_eq!(
        zero_error_interval(&[0.1], &[f64::NAN]),
        Some((0.1, f64::INFINITY))
    );
}

#[test]
fn threshold_recommendations() {
    let (t, basis) = recommend_threshold("rel_l2", &[1e-6, 1e-5], &[1e-3, 1e-2]).unwrap();
    assert_eq!(basis, ThresholdBasis::ZeroErrorMidpoint);
    assert!((t - 1e-4).abs() < 1e-18);
    let (t, _) = recommend_threshold("pe", &[0.0, 0.0], &[0.2, 0.4]).unwrap();
    assert_eq!(t, 0.1); // arithmetic midpoint when the interval starts at 0
    let honest: Vec<f64> = (0..=100).map(|i| i as f64).collect();
    let (t, basis) = recommend_threshold("mean_abs", &honest, &[50.0]).unwrap();
    assert_eq!((t, basis), (99.0, ThresholdBasis::HonestP99));
    let (t, basis) = recommend_threshold("max_abs", &[0.5, 2.0], &[]).unwrap();
    assert_eq!((t, basis), (4.0, ThresholdBasis::HonestOnly));
    assert_eq!(recommend_threshold("pe", &[], &[0.5]), None);
    assert_eq!(
        recommend_threshold("rel_l2", &[0.1], &[f64::NAN])
            .unwrap()
            .0,
        0.2
    );
}

#[test]
fn pw_is_higher_is_better() {
    let report = metric_report("pw", &[0.5, 0.6], &[0.1, 0.2]);
    assert_eq!(report.auc, Some(1.0));
    assert_eq!(report.zero_error_interval, Some((0.2, 0.5)));
    assert!((report.recommended_threshold.unwrap() - 0.1f64.sqrt()).abs() < 1e-12);
    assert_eq!(recommend_threshold("pw", &[0.4, 0.8], &[]).unwrap().0, 0.2);
    let overlapping = metric_report("pw", &[0.5, 0.6], &[0.55, 0.1]);
    assert_eq!(overlapping.zero_error_interval, None);
    assert_eq!(overlapping.auc, Some(0.75));
    // Raw values stay in pw units.
    assert_eq!(report.honest_values, vec![0.5, 0.6]);
}

#[test]
fn subsampling_keeps_extremes_and_order() {
    let values = lcg_values(7, 50_000, 1 << 30);
    let kept = subsample_sorted(&values, MAX_RAW_VALUES);
    assert_eq!(kept.len(), MAX_RAW_VALUES);
    assert!(kept.windows(2).all(|w| w[0] <= w[1]));
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    assert_eq!((kept[0], kept[MAX_RAW_VALUES - 1]), (min, max));
    assert_eq!(subsample_sorted(&[3.0, 1.0], 10), vec![1.0, 3.0]);
}

/// `count` checks of 64 elements whose committed vectors deviate by `scale`·noise.
fn checks(seed: u64, count: usize, scale: f32) -> Vec<CheckMetrics> {
    (0..count as u64)
        .map(|i| {
            let base: Vec<f32> = lcg_values(seed * 1000 + i, 64, 1 << 20)
                .iter()
                .map(|v| (*v as f32 - 0.5) * 4.0)
                .collect();
            let noise = lcg_values(seed * 7777 + i, 64, 1 << 20);
            let committed: Vec<f32> = base
                .iter()
                .zip(&noise)
                .map(|(b, n)| b + (*n as f32 - 0.5) * scale * b.abs())
                .collect();
            compare(&committed, &base, CompareDtype::F32).unwrap()
        })
        .collect()
}

#[derive(Deserialize)]
struct ExperimentSnippet {
    policy: PolicyConfig,
}

#[test]
fn report_on_separable_inputs() {
    let honest = checks(1, 40, 1e-6);
    let mut cheat = checks(2, 30, 1e-2);
    cheat.push(compare(&[f32::NAN, 1.0], &[1.0, 1.0], CompareDtype::F32).unwrap());
    let report = build_report(
        vec!["exp1".into(), "exp3".into()],
        5,
        &honest,
        &cheat,
        &[1.0, 0.99],
        &[0.1, 0.0],
    );
    let names: Vec<&str> = report.metrics.iter().map(|r| r.metric.as_str()).collect();
    assert_eq!(names, METRICS);
    let rel_l2 = report
        .metrics
        .iter()
        .find(|r| r.metric == "rel_l2")
        .unwrap();
    assert_eq!(rel_l2.auc, Some(1.0));
    let (lo, hi) = rel_l2.zero_error_interval.unwrap();
    let threshold = rel_l2.recommended_threshold.unwrap();
    assert!(lo <= threshold && threshold < hi);
    assert_eq!(rel_l2.honest.as_ref().unwrap().count, 40);
    assert_eq!(rel_l2.cheat_values.len(), 31);
    assert_eq!(rel_l2.cheat_values.last(), Some(&f64::INFINITY));
    assert_eq!(report.accept_rates.honest_stats.as_ref().unwrap().min, 0.99);

    // The snippet parses as an experiments.yaml policy, validates, and keeps the
    // recommendation inside the zero-error interval after rounding.
    let snippet: ExperimentSnippet = serde_yaml::from_str(&report.recommended_yaml)
        .unwrap_or_else(|e| panic!("{e}\n{}", report.recommended_yaml));
    snippet.policy.validate().unwrap();
    let tier = snippet
        .policy
        .tier_thresholds(CompareDtype::F16, CompareDtype::F16)
        .unwrap();
    assert!(
        lo <= tier.rel_l2_max && tier.rel_l2_max < hi,
        "{}",
        report.recommended_yaml
    );
    assert!(report.recommended_yaml.contains("# policy: {kind: seed"));
    assert!(report
        .recommended_yaml
        .contains("rel_l2    1.0000  (separable)"));
    // rel_l2 separates and Pe does not, so Pe is relaxed: every honest check is accepted
    // and every cheat check rejected, by the precision-aware snippet and the seed one.
    assert!(report
        .recommended_yaml
        .contains("pe: does not separate but rel_l2 does"));
    let seed_line = report
        .recommended_yaml
        .lines()
        .find(|l| l.contains("kind: seed"))
        .unwrap();
    let seed: ExperimentSnippet = serde_yaml::from_str(&seed_line.replacen("# ", "", 1)).unwrap();
    for policy in [&snippet.policy, &seed.policy] {
        for m in &honest {
            assert!(
                policy.decide(m, CompareDtype::F32, CompareDtype::F32),
                "{policy:?}"
            );
        }
        for m in &cheat {
            assert!(
                !policy.decide(m, CompareDtype::F32, CompareDtype::F32),
                "{policy:?}"
            );
        }
    }

    // JSON keeps infinities (as strings). serde_json's default float parser may differ in
    // the last bit, so compare approximately.
    let json = serde_json::to_string(&report).unwrap();
    let back: OptimizationReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back.recommended_yaml, report.recommended_yaml);
    let back_rel_l2 = back.metrics.iter().find(|r| r.metric == "rel_l2").unwrap();
    assert_eq!(back_rel_l2.cheat_values.last(), Some(&f64::INFINITY));
    assert_eq!(back_rel_l2.cheat.as_ref().unwrap().max, f64::INFINITY);
    let (back_lo, back_hi) = back_rel_l2.zero_error_interval.unwrap();
    assert!((back_lo / lo - 1.0).abs() < 1e-12 && (back_hi / hi - 1.0).abs() < 1e-12);
    assert_eq!(back.accept_rates, report.accept_rates);
}

#[test]
fn report_for_one_tier_keeps_other_defaults() {
    let (honest, cheat) = (checks(3, 10, 1e-6), checks(4, 10, 1e-1));
    let report = build_report_by_tier(
        vec!["exp".into()],
        1,
        &honest,
        &cheat,
        &[],
        &[],
        &[TierChecks {
            tier: CompareDtype::F32,
            honest: &honest,
            cheat: &cheat,
        }],
    );
    let snippet: ExperimentSnippet = serde_yaml::from_str(&report.recommended_yaml).unwrap();
    let PolicyConfig::PrecisionAware { f32, f16, bf16, .. } = snippet.policy else {
        panic!("expected precision_aware");
    };
    assert_eq!((f16, bf16), (F16_TIER_DEFAULT, BF16_TIER_DEFAULT));
    assert_ne!(f32, F32_TIER_DEFAULT);
    assert!(report.accept_rates.honest_stats.is_none());
}

/// `optimize --experiment all` measures f32 pairs (drift 1e-6) and bf16 pairs (1e-2) at once:
/// pooled, the f32 limit came out 250× too loose, letting an f32 verifier accept q8 cheats.
#[test]
fn each_tier_gets_thresholds_from_its_own_checks() {
    let f32_honest = checks(5, 20, 1e-6);
    let bf16_honest = checks(6, 20, 1e-2);
    let cheat = checks(7, 20, 2e-1);
    let all_honest: Vec<CheckMetrics> = f32_honest.iter().chain(&bf16_honest).cloned().collect();
    let report = build_report_by_tier(
        vec!["exp1".into(), "exp2".into(), "exp3".into()],
        1,
        &all_honest,
        &cheat,
        &[],
        &[],
        &[
            TierChecks {
                tier: CompareDtype::F32,
                honest: &f32_honest,
                cheat: &cheat,
            },
            TierChecks {
                tier: CompareDtype::Bf16,
                honest: &bf16_honest,
                cheat: &[],
            },
        ],
    );
    let snippet: ExperimentSnippet = serde_yaml::from_str(&report.recommended_yaml).unwrap();
    let PolicyConfig::PrecisionAware { f32, f16, bf16, .. } = snippet.policy else {
        panic!("expected precision_aware");
    };
    let bf16_max = bf16_honest.iter().map(|m| m.rel_l2).fold(0.0, f64::max);
    let f32_max = f32_honest.iter().map(|m| m.rel_l2).fold(0.0, f64::max);
    assert!(
        // Pooled, the limit would have to pass bf16's honest drift too.
        f32.rel_l2_max < bf16_max && f32.rel_l2_max >= f32_max,
        "f32 limit {} from f32 drift {f32_max:e}, not bf16's {bf16_max:e}",
        f32.rel_l2_max
    );
    assert!(bf16.rel_l2_max >= bf16_max, "{}", bf16.rel_l2_max);
    assert_eq!(f16, F16_TIER_DEFAULT, "no f16 checks: its defaults stay");
    assert!(report
        .recommended_yaml
        .contains("f32 tier (20 honest, 20 cheat checks)"));
    assert!(!report.recommended_yaml.contains("Written under every tier"));
    // The report carries the snippet's values, for figures and the terminal table.
    let tiers: Vec<(&str, f64, f64, usize)> = report
        .tiers
        .iter()
        .map(|t| (t.tier.as_str(), t.rel_l2_max, t.pe_max, t.cheat_checks))
        .collect();
    assert_eq!(
        tiers,
        [
            ("f32", f32.rel_l2_max, f32.pe_max, 20),
            ("bf16", bf16.rel_l2_max, bf16.pe_max, 0)
        ]
    );
    let panels = crate::plot::distributions::check_panels_from_report(
        &report,
        &crate::plot::distributions::POLICY_METRICS,
    );
    let lines: Vec<f64> = panels[0].thresholds.iter().map(|t| t.value).collect();
    assert_eq!(lines, [f32.rel_l2_max, bf16.rel_l2_max]);
}

#[test]
fn report_without_cheat_data_or_any_data() {
    let report = build_report(vec![], 0, &checks(5, 8, 1e-6), &[], &[1.0], &[]);
    for metric in &report.metrics {
        assert_eq!(metric.auc, None);
        assert!(metric.roc.is_empty());
        assert!(metric.cheat.is_none());
        assert!(metric.recommended_threshold.is_some());
    }
    let snippet: ExperimentSnippet = serde_yaml::from_str(&report.recommended_yaml).unwrap();
    snippet.policy.validate().unwrap();
    assert!(report.recommended_yaml.contains("no cheat data"));

    let empty = build_report(vec![], 0, &[], &[], &[], &[]);
    let snippet: ExperimentSnippet = serde_yaml::from_str(&empty.recommended_yaml).unwrap();
    assert_eq!(snippet.policy, PolicyConfig::default());
}

#[test]
fn metric_lookup() {
    let m = checks(6, 1, 1e-3).remove(0);
    for &name in METRICS {
        assert!(metric_value(&m, name).is_some(), "{name}");
    }
    assert_eq!(metric_value(&m, "rel_l2"), Some(m.rel_l2));
    assert_eq!(metric_value(&m, "nonsense"), None);
    assert!(!higher_is_worse("pw") && higher_is_worse("pe"));
}

/// `count` checks of 64 elements in [1.1, 1.8) deviating by +1e-4 relative: no exponent ever
/// changes (Pe = 0) while mean|Δ| stays far above the seed rule's exact-match floor.
fn zero_pe_checks(seed: u64, count: usize) -> Vec<CheckMetrics> {
    (0..count as u64)
        .map(|i| {
            let base: Vec<f32> = lcg_values(seed * 1000 + i, 64, 1 << 20)
                .iter()
                .map(|v| 1.1 + *v as f32 * 0.7)
                .collect();
            let committed: Vec<f32> = base.iter().map(|b| b * (1.0 + 1e-4)).collect();
            let m = compare(&committed, &base, CompareDtype::F32).unwrap();
            assert_eq!(m.pe, 0.0);
            m
        })
        .collect()
}

fn seed_policy(yaml: &str) -> PolicyConfig {
    let line = yaml.lines().find(|l| l.contains("kind: seed")).unwrap();
    let snippet: ExperimentSnippet =
        serde_yaml::from_str(&line.replacen("# ", "", 1)).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    snippet.policy.validate().unwrap();
    snippet.policy
}

fn accepted(policy: &PolicyConfig, checks: &[CheckMetrics]) -> usize {
    checks
        .iter()
        .filter(|m| policy.decide(m, CompareDtype::F32, CompareDtype::F32))
        .count()
}

#[test]
fn all_zero_honest_pe_never_recommends_a_limit_that_rejects_everything() {
    let honest = zero_pe_checks(11, 50);
    // No cheat data: "2 x worst" of all-zero Pe would be 0, which the seed rule's strict
    // `pe < pe_max` turns into "reject every check"; the limit is floored instead.
    let report = build_report(vec![], 1, &honest, &[], &[1.0], &[]);
    let seed = seed_policy(&report.recommended_yaml);
    assert_eq!(
        accepted(&seed, &honest),
        honest.len(),
        "{}",
        report.recommended_yaml
    );
    let snippet: ExperimentSnippet = serde_yaml::from_str(&report.recommended_yaml).unwrap();
    assert_eq!(accepted(&snippet.policy, &honest), honest.len());

    // Cheats indistinguishable from honest checks: the honest p99 of Pe is 0, kept as 0 for
    // precision_aware's `<=` but made positive for the seed rule's `<`, which then rejects
    // only the ~1% of honest checks its mean|Δ| p99 limit is meant to.
    let cheat = zero_pe_checks(11, 50);
    let report = build_report(vec![], 1, &honest, &cheat, &[1.0], &[1.0]);
    let seed = seed_policy(&report.recommended_yaml);
    let PolicyConfig::Seed { pe_max, .. } = seed else {
        panic!("expected the seed rule");
    };
    assert!(pe_max > 0.0 && pe_max < 1e-6, "{pe_max}");
    assert!(
        accepted(&seed, &honest) >= honest.len() - 1,
        "{}",
        report.recommended_yaml
    );
    let snippet: ExperimentSnippet = serde_yaml::from_str(&report.recommended_yaml).unwrap();
    assert!(accepted(&snippet.policy, &honest) >= honest.len() - 1);

    // A hand-written seed policy with pe_max 0 is refused, not silently useless.
    let zero = PolicyConfig::Seed {
        mean_epsilon: 0.01,
        pe_max: 0.0,
    };
    assert!(zero.validate().unwrap_err().contains("pe_max"));
}

#[test]
fn rounding_keeps_a_strict_limit_above_the_honest_edge() {
    // Rounding 0.10000005 to 3 digits gives 0.1, the honest maximum itself: fine for `<=`,
    // but the seed rule's `<` would reject that honest check.
    let interval = Some((0.1, 0.1000001));
    assert_eq!(
        format_threshold(0.10000005, interval, Comparison::AtMost),
        "0.1"
    );
    let strict = format_threshold(0.10000005, interval, Comparison::Below);
    let value: f64 = strict.parse().unwrap();
    assert!(0.1 < value && value < 0.1000001, "{strict}");
}
