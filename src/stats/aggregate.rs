//! Summaries over many checks or runs.

use serde::{Deserialize, Serialize};

/// Summary statistics of a set of values.
///
/// Non-finite values are kept, not hidden: `count` includes them; NaN is ranked as +inf (every
/// metric here is "higher = worse", so NaN is treated as the worst value); `min`, `max` and the
/// percentiles are order statistics over all values, so e.g. `max` is +inf if any value is +inf
/// or NaN and `p99` is +inf when more than about 1% are. `mean` and `std` are moments and only
/// exist over finite values: they are computed over the finite ones (NaN if there are none).
/// Percentiles interpolate linearly between closest ranks (numpy's default); `std` is the
/// population standard deviation (numpy's default, ddof = 0).
///
/// Float fields serialize non-finite values as "inf", "-inf" or "nan" strings (JSON-safe).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Distribution {
    pub count: usize,
    #[serde(with = "super::metrics::float_serde")]
    pub mean: f64,
    #[serde(with = "super::metrics::float_serde")]
    pub std: f64,
    #[serde(with = "super::metrics::float_serde")]
    pub min: f64,
    #[serde(with = "super::metrics::float_serde")]
    pub max: f64,
    #[serde(with = "super::metrics::float_serde")]
    pub p50: f64,
    #[serde(with = "super::metrics::float_serde")]
    pub p90: f64,
    #[serde(with = "super::metrics::float_serde")]
    pub p95: f64,
    #[serde(with = "super::metrics::float_serde")]
    pub p99: f64,
}

impl Distribution {
    /// Summarize `values`; None when there are none.
    pub fn from_values(values: &[f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let sorted = sorted_worst_last(values);
        let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        let (mean, std) = if finite.is_empty() {
            (f64::NAN, f64::NAN)
        } else {
            let n = finite.len() as f64;
            let mean = finite.iter().sum::<f64>() / n;
            let variance = finite.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            (mean, variance.sqrt())
        };
        Some(Distribution {
            count: values.len(),
            mean,
            std,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            p50: percentile_of_sorted(&sorted, 50.0),
            p90: percentile_of_sorted(&sorted, 90.0),
            p95: percentile_of_sorted(&sorted, 95.0),
            p99: percentile_of_sorted(&sorted, 99.0),
        })
    }
}

/// Copy of `values` in ascending order with NaN replaced by +inf (ranked worst).
pub fn sorted_worst_last(values: &[f64]) -> Vec<f64> {
    let mut sorted: Vec<f64> = values
        .iter()
        .map(|&v| if v.is_nan() { f64::INFINITY } else { v })
        .collect();
    sorted.sort_unstable_by(f64::total_cmp);
    sorted
}

/// The `pct`-th percentile (0..=100) of ascending, NaN-free values, interpolating linearly
/// between the two closest ranks like numpy's default. An infinite neighbour wins the
/// interpolation (instead of producing inf − inf = NaN). NaN for an empty slice.
pub fn percentile_of_sorted(sorted: &[f64], pct: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (pct / 100.0).clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let below = rank.floor() as usize;
    let above = rank.ceil() as usize;
    let fraction = rank - below as f64;
    let (low, high) = (sorted[below], sorted[above]);
    if fraction == 0.0 || low == high || low == f64::NEG_INFINITY {
        low
    } else if high == f64::INFINITY {
        high
    } else {
        low + (high - low) * fraction
    }
}

/// How many checks a verifier accepted out of how many it decided.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcceptTally {
    pub accepted: usize,
    pub total: usize,
}

impl AcceptTally {
    /// Count one decision (true = ACCEPT).
    pub fn record(&mut self, accepted: bool) {
        self.total += 1;
        if accepted {
            self.accepted += 1;
        }
    }

    /// Add another tally's counts (e.g. to pool runs).
    pub fn merge(&mut self, other: AcceptTally) {
        self.accepted += other.accepted;
        self.total += other.total;
    }

    /// accepted / total; 0 for an empty tally, because a verifier that checked nothing has
    /// established nothing and must not pass.
    pub fn accept_rate(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.accepted as f64 / self.total as f64
        }
    }
}

impl FromIterator<bool> for AcceptTally {
    fn from_iter<I: IntoIterator<Item = bool>>(decisions: I) -> Self {
        let mut tally = AcceptTally::default();
        decisions.into_iter().for_each(|d| tally.record(d));
        tally
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn empty_is_none() {
        assert_eq!(Distribution::from_values(&[]), None);
    }

    #[test]
    fn matches_numpy_linear_percentiles() {
        // numpy: np.percentile([1,2,3,4,10], [50,90,95,99]) = [3, 7.6, 8.8, 9.76]
        let d = Distribution::from_values(&[4.0, 1.0, 10.0, 3.0, 2.0]).unwrap();
        assert_eq!(d.count, 5);
        assert!(close(d.mean, 4.0));
        // population std: sqrt(mean of squared deviations) = sqrt((9+4+1+0+36)/5)
        assert!(close(d.std, 10f64.sqrt()));
        assert_eq!((d.min, d.max), (1.0, 10.0));
        assert!(close(d.p50, 3.0));
        assert!(close(d.p90, 7.6));
        assert!(close(d.p95, 8.8));
        assert!(close(d.p99, 9.76));
    }

    #[test]
    fn single_value() {
        let d = Distribution::from_values(&[0.5]).unwrap();
        assert_eq!(
            (d.mean, d.std, d.min, d.max, d.p50, d.p99),
            (0.5, 0.0, 0.5, 0.5, 0.5, 0.5)
        );
    }

    #[test]
    fn non_finite_values_stay_visible() {
        let d = Distribution::from_values(&[1.0, 2.0, f64::INFINITY, f64::NAN]).unwrap();
        assert_eq!(d.count, 4);
        assert!(close(d.mean, 1.5)); // finite values only
        assert!(close(d.std, 0.5));
        assert_eq!(d.min, 1.0);
        assert_eq!(d.max, f64::INFINITY);
        // sorted: [1, 2, inf, inf]; p50 rank 1.5 lies between 2 and inf
        assert_eq!(d.p50, f64::INFINITY);
        let d = Distribution::from_values(&[f64::NEG_INFINITY, 0.0, 1.0]).unwrap();
        assert_eq!(d.min, f64::NEG_INFINITY);
        assert_eq!(d.p50, 0.0);
        let d = Distribution::from_values(&[f64::NAN]).unwrap();
        assert!(d.mean.is_nan() && d.std.is_nan());
        assert_eq!(d.max, f64::INFINITY);
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(
            serde_json::from_str::<Distribution>(&json).unwrap().max,
            f64::INFINITY
        );
    }

    #[test]
    fn tally() {
        let t: AcceptTally = [true, true, false, true].into_iter().collect();
        assert_eq!(
            t,
            AcceptTally {
                accepted: 3,
                total: 4
            }
        );
        assert_eq!(t.accept_rate(), 0.75);
        assert_eq!(AcceptTally::default().accept_rate(), 0.0);
        let mut pooled = t;
        pooled.merge(AcceptTally {
            accepted: 1,
            total: 4,
        });
        assert_eq!(pooled.accept_rate(), 0.5);
    }
}
