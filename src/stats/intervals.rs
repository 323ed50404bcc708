//! Confidence intervals for a binomial proportion (Wilson, Clopper–Pearson) and the normal
//! quantile they and the trial-level test need. Pure f64 arithmetic, no dependencies.
//!
//! Clopper–Pearson bounds are beta-distribution quantiles; they are found by bisection on the
//! regularized incomplete beta function, evaluated with its continued fraction (Lentz's method).

use serde::{Deserialize, Serialize};

/// A two-sided interval for a proportion, with the point estimate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateInterval {
    /// Successes over trials (NaN when there are no trials).
    pub rate: f64,
    pub low: f64,
    pub high: f64,
    pub successes: usize,
    pub trials: usize,
}

impl RateInterval {
    /// `0.750 [0.194, 0.994]` — how tables and the console show it.
    pub fn display(&self) -> String {
        if self.trials == 0 {
            return "—".into();
        }
        format!("{:.3} [{:.3}, {:.3}]", self.rate, self.low, self.high)
    }
}

/// The standard normal quantile Φ⁻¹(p), p in (0, 1) (Acklam's rational approximation, relative
/// error below 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let low = 0.024_25;
    if p < low {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - low {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        let q = (-2.0 * (1.0 - p).ln()).sqrt();
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    }
}

/// The p-quantile of Student's t with `dof` degrees of freedom (p in (0.5, 1)), by bisection
/// on its CDF: for t > 0, P(T ≤ t) = 1 − I_{ν/(ν+t²)}(ν/2, 1/2)/2.
pub fn student_t_quantile(p: f64, dof: f64) -> f64 {
    if p <= 0.5 {
        return 0.0;
    }
    let upper_tail =
        |t: f64| 0.5 * regularized_incomplete_beta(dof / (dof + t * t), dof / 2.0, 0.5);
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while upper_tail(hi) > 1.0 - p && hi < 1e12 {
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if upper_tail(mid) > 1.0 - p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Wilson score interval at two-sided confidence `confidence` (e.g. 0.95).
pub fn wilson(successes: usize, trials: usize, confidence: f64) -> RateInterval {
    if trials == 0 {
        return empty(successes);
    }
    let n = trials as f64;
    let p = successes as f64 / n;
    let z = normal_quantile(1.0 - (1.0 - confidence) / 2.0);
    let z2 = z * z;
    let center = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    RateInterval {
        rate: p,
        low: (center - half).max(0.0),
        high: (center + half).min(1.0),
        successes,
        trials,
    }
}

/// Clopper–Pearson ("exact") interval at two-sided confidence `confidence`: it never covers
/// less than `confidence`, whatever the true rate.
pub fn clopper_pearson(successes: usize, trials: usize, confidence: f64) -> RateInterval {
    if trials == 0 {
        return empty(successes);
    }
    let tail = (1.0 - confidence) / 2.0;
    RateInterval {
        rate: successes as f64 / trials as f64,
        low: clopper_pearson_bound(successes, trials, tail, false),
        high: clopper_pearson_bound(successes, trials, tail, true),
        successes,
        trials,
    }
}

/// The one-sided Clopper–Pearson upper bound: the largest rate under which seeing at most
/// `successes` in `trials` still has probability ≥ `tail`. With 0 of n it is 1 − tail^(1/n).
pub fn clopper_pearson_upper(successes: usize, trials: usize, tail: f64) -> f64 {
    if trials == 0 {
        return 1.0;
    }
    clopper_pearson_bound(successes, trials, tail, true)
}

fn clopper_pearson_bound(k: usize, n: usize, tail: f64, upper: bool) -> f64 {
    let (kf, nf) = (k as f64, n as f64);
    if upper {
        if k == n {
            return 1.0;
        }
        // Upper bound = Beta quantile (1 − tail) of Beta(k + 1, n − k).
        beta_quantile(1.0 - tail, kf + 1.0, nf - kf)
    } else {
        if k == 0 {
            return 0.0;
        }
        beta_quantile(tail, kf, nf - kf + 1.0)
    }
}

/// The p-quantile of Beta(a, b), by bisection on the regularized incomplete beta function.
fn beta_quantile(p: f64, a: f64, b: f64) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if regularized_incomplete_beta(mid, a, b) < p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-15 {
            break;
        }
    }
    0.5 * (lo + hi)
}

/// I_x(a, b), the CDF of Beta(a, b) at x.
pub fn regularized_incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    let front = ln_front.exp();
    // The continued fraction converges fast for x < (a + 1)/(a + b + 2); use the symmetry
    // I_x(a, b) = 1 − I_{1−x}(b, a) elsewhere.
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_continued_fraction(x, a, b) / a
    } else {
        1.0 - front * beta_continued_fraction(1.0 - x, b, a) / b
    }
}

fn beta_continued_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..10_000 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, nine coefficients: about 15 significant digits).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const COEF: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1−x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = COEF[0];
    for (i, c) in COEF.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

fn empty(successes: usize) -> RateInterval {
    RateInterval {
        rate: f64::NAN,
        low: 0.0,
        high: 1.0,
        successes,
        trials: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol, "{a} vs {b} (tolerance {tol})");
    }

    #[test]
    fn normal_quantiles_match_tables() {
        close(normal_quantile(0.5), 0.0, 1e-9);
        close(normal_quantile(0.975), 1.959_963_985, 1e-7);
        close(normal_quantile(0.999), 3.090_232_306, 1e-7);
        close(normal_quantile(0.001), -3.090_232_306, 1e-7);
        close(normal_quantile(0.9), 1.281_551_566, 1e-7);
    }

    #[test]
    fn clopper_pearson_matches_closed_forms_and_r() {
        // 0 of n: the upper bound is 1 − (tail)^(1/n).
        let ci = clopper_pearson(0, 20, 0.95);
        close(ci.low, 0.0, 0.0);
        close(ci.high, 1.0 - 0.025f64.powf(1.0 / 20.0), 1e-9);
        // n of n: the lower bound is tail^(1/n).
        let ci = clopper_pearson(10, 10, 0.95);
        close(ci.low, 0.025f64.powf(0.1), 1e-9);
        // R: binom.test(3, 10)$conf.int = 0.06673951 0.65245285
        let ci = clopper_pearson(3, 10, 0.95);
        close(ci.low, 0.066_739_51, 1e-7);
        close(ci.high, 0.652_452_85, 1e-7);
        // One-sided upper bound at 5 %: 1 − 0.05^(1/300) for 0 of 300.
        close(
            clopper_pearson_upper(0, 300, 0.05),
            1.0 - 0.05f64.powf(1.0 / 300.0),
            1e-9,
        );
    }

    #[test]
    fn student_t_quantiles_match_tables() {
        // qt(0.975, 3) = 3.182446, qt(0.999, 3) = 10.21453, qt(0.999, 19) = 3.579400
        close(student_t_quantile(0.975, 3.0), 3.182_446, 1e-5);
        close(student_t_quantile(0.999, 3.0), 10.214_53, 1e-4);
        close(student_t_quantile(0.999, 19.0), 3.579_400, 1e-5);
    }

    #[test]
    fn wilson_matches_a_worked_example() {
        // 8 of 10 at 95 %: [0.4902, 0.9433] (Wilson 1927, as tabulated by Newcombe 1998).
        let ci = wilson(8, 10, 0.95);
        close(ci.low, 0.4902, 1e-4);
        close(ci.high, 0.9433, 1e-4);
        assert_eq!(wilson(0, 0, 0.95).display(), "—");
    }
}
