//! Which per-check number a figure shows, with the names and labels used for it.

use std::fmt;
use std::str::FromStr;

use crate::stats::metrics::CheckMetrics;

/// A per-check metric that can be plotted. Names match the optimizer's `MetricReport::metric`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckMetric {
    Pe,
    Pm,
    Pw,
    MeanAbs,
    MaxAbs,
    RelL2,
    UlpMean,
    UlpMedian,
}

impl CheckMetric {
    pub const ALL: [CheckMetric; 8] = [
        CheckMetric::Pe,
        CheckMetric::Pm,
        CheckMetric::Pw,
        CheckMetric::MeanAbs,
        CheckMetric::MaxAbs,
        CheckMetric::RelL2,
        CheckMetric::UlpMean,
        CheckMetric::UlpMedian,
    ];

    /// Short machine name, used in file names and reports.
    pub fn name(self) -> &'static str {
        match self {
            CheckMetric::Pe => "pe",
            CheckMetric::Pm => "pm",
            CheckMetric::Pw => "pw",
            CheckMetric::MeanAbs => "mean_abs",
            CheckMetric::MaxAbs => "max_abs",
            CheckMetric::RelL2 => "rel_l2",
            CheckMetric::UlpMean => "ulp_mean",
            CheckMetric::UlpMedian => "ulp_median",
        }
    }

    /// Human title, e.g. for a panel or a legend.
    pub fn title(self) -> &'static str {
        match self {
            CheckMetric::Pe => "Pe — exponent mismatch rate",
            CheckMetric::Pm => "Pm — share of elements with |Δ| > 10⁻⁵",
            CheckMetric::Pw => "Pw — share of elements with |Δ| < 10⁻⁷",
            CheckMetric::MeanAbs => "mean |Δ| per check",
            CheckMetric::MaxAbs => "max |Δ| per check",
            CheckMetric::RelL2 => "relative L2 error ‖Δ‖ / ‖v‖",
            CheckMetric::UlpMean => "mean ULP error",
            CheckMetric::UlpMedian => "median ULP error",
        }
    }

    /// What the axis measures.
    pub fn quantity(self) -> &'static str {
        match self {
            CheckMetric::Pe => "Pe (fraction of elements)",
            CheckMetric::Pm => "Pm (fraction of elements)",
            CheckMetric::Pw => "Pw (fraction of elements)",
            CheckMetric::MeanAbs => "mean |Δ|",
            CheckMetric::MaxAbs => "max |Δ|",
            CheckMetric::RelL2 => "relative L2 error",
            CheckMetric::UlpMean => "mean ULP error",
            CheckMetric::UlpMedian => "median ULP error",
        }
    }

    /// The metric's value in one check.
    pub fn value(self, metrics: &CheckMetrics) -> f64 {
        match self {
            CheckMetric::Pe => metrics.pe,
            CheckMetric::Pm => metrics.pm,
            CheckMetric::Pw => metrics.pw,
            CheckMetric::MeanAbs => metrics.mean_abs,
            CheckMetric::MaxAbs => metrics.max_abs,
            CheckMetric::RelL2 => metrics.rel_l2,
            CheckMetric::UlpMean => metrics.ulp_mean,
            CheckMetric::UlpMedian => metrics.ulp_median,
        }
    }
}

impl fmt::Display for CheckMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CheckMetric {
    type Err = anyhow::Error;

    fn from_str(name: &str) -> anyhow::Result<Self> {
        CheckMetric::ALL
            .into_iter()
            .find(|metric| metric.name() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = CheckMetric::ALL.iter().map(|m| m.name()).collect();
                anyhow::anyhow!("unknown metric {name:?}; known: {}", known.join(", "))
            })
    }
}
