//! Value axes that switch to a log scale when the data span decades, plus histogram binning
//! and the summary numbers (mean, p95) the figures annotate.
//!
//! Log axes are drawn in log10 space: a value v sits at x = log10(v), so histogram bins are
//! equal in log space and the tick labels are written as powers of ten. Zeros (common: an
//! honest verifier on the same hardware reproduces many vectors exactly) cannot sit on a log
//! axis, so they are clamped to a floor one decade below the smallest positive value, and the
//! axis description says so.

use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};

use super::style::{format_number, power_of_ten_label};

/// Positive values spanning at least this ratio (two decades) get a log axis.
const LOG_SCALE_MIN_RATIO: f64 = 100.0;

/// How values map onto an axis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    Linear,
    /// Values are drawn at log10(max(v, floor)).
    Log {
        floor: f64,
    },
}

/// An axis fitted to some values: scale, range (in drawing coordinates) and tick positions.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueAxis {
    pub scale: Scale,
    /// Drawing-coordinate range: values for a linear axis, log10 values for a log axis.
    pub start: f64,
    pub end: f64,
    /// Tick positions, in drawing coordinates.
    pub ticks: Vec<f64>,
    /// Some values were ≤ 0 and are shown at the floor of a log axis.
    pub has_clamped_zeros: bool,
}

impl ValueAxis {
    /// Fits an axis to the finite values; `fixed_range` forces a linear axis over that range
    /// (for bounded quantities such as accept rates).
    pub fn fit(values: &[f64], fixed_range: Option<(f64, f64)>) -> Self {
        if let Some((start, end)) = fixed_range {
            return Self::linear(start, end);
        }
        let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        let min = finite.iter().copied().fold(f64::INFINITY, f64::min);
        let max = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if finite.is_empty() {
            return Self::linear(0.0, 1.0);
        }
        let min_positive = finite
            .iter()
            .copied()
            .filter(|v| *v > 0.0)
            .fold(f64::INFINITY, f64::min);
        let spans_decades =
            min >= 0.0 && min_positive.is_finite() && max / min_positive >= LOG_SCALE_MIN_RATIO;
        if spans_decades {
            Self::log(min_positive, max, min <= 0.0)
        } else {
            let start = if min >= 0.0 && min <= max * 0.5 {
                0.0
            } else {
                min
            };
            Self::linear(start, max)
        }
    }

    /// A log axis over whole decades from the one holding `min_positive` to the one holding
    /// `max`; with `has_zeros` one more decade below holds the clamped zeros.
    pub fn log(min_positive: f64, max: f64, has_zeros: bool) -> Self {
        let mut low = min_positive.log10().floor();
        let high = max.log10().ceil().max(low + 1.0);
        if has_zeros {
            low -= 1.0;
        }
        let decades = (high - low) as i64;
        let step = ((decades + 7) / 8).max(1);
        let mut ticks: Vec<f64> = (0..=decades)
            .filter(|k| k % step == 0)
            .map(|k| low + k as f64)
            .collect();
        if decades <= 2 {
            // Few decades leave few ticks: add 2× and 5× within each.
            let within = (0..decades)
                .flat_map(|k| [2.0f64, 5.0].map(|factor| low + k as f64 + factor.log10()));
            ticks.extend(within);
            ticks.sort_by(f64::total_cmp);
        }
        Self {
            scale: Scale::Log {
                floor: 10f64.powf(low),
            },
            start: low,
            end: high,
            ticks,
            has_clamped_zeros: has_zeros,
        }
    }

    /// A linear axis covering `start..end`, widened to round tick values.
    pub fn linear(start: f64, end: f64) -> Self {
        let (start, end) = if end > start {
            (start, end)
        } else {
            if start == 0.0 {
                (0.0, 1.0)
            } else {
                let pad = start.abs() * 0.1;
                (start - pad, end + pad)
            }
        };
        let step = nice_step((end - start) / 8.0);
        // The tolerance keeps a bound that is already a tick (0, 1) from growing a step.
        let first = (start / step + 1e-9).floor();
        let last = (end / step - 1e-9).ceil();
        let ticks: Vec<f64> = (first as i64..=last as i64)
            .map(|k| k as f64 * step)
            .collect();
        Self {
            scale: Scale::Linear,
            start: first * step,
            end: last * step,
            ticks,
            has_clamped_zeros: false,
        }
    }

    /// Where a value is drawn.
    pub fn to_axis(&self, value: f64) -> f64 {
        match self.scale {
            Scale::Linear => value,
            Scale::Log { floor } => value.max(floor).log10(),
        }
    }

    /// Tick label for a drawing coordinate.
    pub fn tick_label(&self, position: f64) -> String {
        match self.scale {
            Scale::Linear => {
                // As many decimals as the tick step needs, so 1.025 is not shown as "1.03".
                let step = self
                    .ticks
                    .windows(2)
                    .map(|pair| pair[1] - pair[0])
                    .next()
                    .unwrap_or(1.0);
                let magnitude = position.abs().max(step);
                if !(1e-3..1e5).contains(&magnitude) {
                    return format_number(position);
                }
                let decimals = (0..=6)
                    .find(|&d| {
                        let scale = 10f64.powi(d);
                        ((step * scale).round() - step * scale).abs() < 1e-6 * scale.max(1.0)
                    })
                    .unwrap_or(6) as usize;
                if position.abs() < step * 1e-6 {
                    return "0".to_string();
                }
                format!("{position:.decimals$}")
            }
            Scale::Log { .. } => {
                let plain_range =
                    self.end - self.start <= 2.0 && self.start >= -3.0 && self.end <= 5.0;
                let whole_decade = (position - position.round()).abs() < 1e-9;
                if whole_decade && !plain_range {
                    power_of_ten_label(position.round() as i32)
                } else {
                    format_number(10f64.powf(position))
                }
            }
        }
    }

    /// Axis description: the quantity, plus how the scale treats it.
    pub fn describe(&self, quantity: &str) -> String {
        match self.scale {
            Scale::Linear => quantity.to_string(),
            Scale::Log { floor } if self.has_clamped_zeros => format!(
                "{quantity} (log scale; 0 shown at {})",
                power_of_ten_label(floor.log10().round() as i32)
            ),
            Scale::Log { .. } => format!("{quantity} (log scale)"),
        }
    }

    /// Splits the axis into `bins` equal bins (equal in log space on a log axis) and counts
    /// the finite values in each; values outside the range land in the edge bins.
    pub fn histogram(&self, values: &[f64], bins: usize) -> Vec<usize> {
        let mut counts = vec![0; bins];
        let width = (self.end - self.start) / bins as f64;
        for value in values.iter().copied().filter(|v| v.is_finite()) {
            let position = (self.to_axis(value) - self.start) / width;
            let index = (position.floor().max(0.0) as usize).min(bins - 1);
            counts[index] += 1;
        }
        counts
    }

    /// Drawing-coordinate edges of bin `index` out of `bins`.
    pub fn bin_edges(&self, index: usize, bins: usize) -> (f64, f64) {
        let width = (self.end - self.start) / bins as f64;
        (
            self.start + index as f64 * width,
            self.start + (index + 1) as f64 * width,
        )
    }
}

/// A linear f64 coordinate whose tick marks are exactly the given positions. Plotters' own
/// key-point wrapper cannot be used with f64 axes in `configure_mesh`, and log axes need ticks at
/// whole decades only.
#[derive(Debug, Clone, PartialEq)]
pub struct TickedRange {
    start: f64,
    end: f64,
    ticks: Vec<f64>,
}

impl TickedRange {
    /// Ticks outside `start..=end` are dropped.
    pub fn new(start: f64, end: f64, ticks: Vec<f64>) -> Self {
        let ticks = ticks
            .into_iter()
            .filter(|t| {
                *t >= start - 1e-9 * (end - start).abs() && *t <= end + 1e-9 * (end - start).abs()
            })
            .collect();
        Self { start, end, ticks }
    }
}

impl From<&ValueAxis> for TickedRange {
    fn from(axis: &ValueAxis) -> Self {
        Self::new(axis.start, axis.end, axis.ticks.clone())
    }
}

impl Ranged for TickedRange {
    type ValueType = f64;
    type FormatOption = DefaultFormatting;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = self.end - self.start;
        if span == 0.0 || !value.is_finite() {
            return (limit.0 + limit.1) / 2;
        }
        // Clamped a little beyond the edges so far-off values cannot overflow pixel maths.
        let fraction = ((value - self.start) / span).clamp(-1.0, 2.0);
        limit.0 + (fraction * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.start..self.end
    }
}

/// The smallest of 1, 2, 2.5, 5 × 10^k that is at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw.is_nan() || raw <= 0.0 || raw.is_infinite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude)
}

/// Count, mean and 95th percentile of a sample, as annotated on the histograms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleSummary {
    pub count: usize,
    pub mean: f64,
    pub p95: f64,
}

impl SampleSummary {
    /// Summary of the finite values; None when there are none.
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let mean = sorted.iter().sum::<f64>() / sorted.len() as f64;
        Some(Self {
            count: sorted.len(),
            mean,
            p95: percentile_of_sorted(&sorted, 0.95),
        })
    }
}

/// Linear-interpolated percentile (`fraction` in [0, 1]) of ascending values.
pub fn percentile_of_sorted(sorted: &[f64], fraction: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let rank = fraction.clamp(0.0, 1.0) * (n - 1) as f64;
            let lower = rank.floor() as usize;
            let upper = rank.ceil() as usize;
            sorted[lower] + (sorted[upper] - sorted[lower]) * (rank - lower as f64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_spanning_decades_get_a_log_axis_with_zeros_clamped() {
        let axis = ValueAxis::fit(&[0.0, 3e-7, 2e-4, 0.05], None);
        assert_eq!(axis.scale, Scale::Log { floor: 1e-8 });
        assert_eq!((axis.start, axis.end), (-8.0, -1.0));
        assert!(axis.has_clamped_zeros);
        assert!(axis.describe("mean |Δ|").contains("0 shown at 10⁻⁸"));
        assert_eq!(axis.tick_label(-3.0), "10⁻³");
        assert_eq!(
            axis.histogram(&[0.0, 3e-7, 0.05], 7),
            vec![1, 1, 0, 0, 0, 0, 1]
        );
    }

    #[test]
    fn a_log_axis_over_few_decades_gets_intermediate_ticks() {
        let axis = ValueAxis::log(0.3, 0.9, false);
        assert_eq!((axis.start, axis.end), (-1.0, 0.0));
        let labels: Vec<String> = axis.ticks.iter().map(|t| axis.tick_label(*t)).collect();
        assert_eq!(labels, ["0.1", "0.2", "0.5", "1"]);
    }

    #[test]
    fn narrow_values_get_a_linear_axis_from_zero() {
        let axis = ValueAxis::fit(&[0.1, 0.3, 0.35], None);
        assert_eq!(axis.scale, Scale::Linear);
        assert_eq!(axis.start, 0.0);
        assert!(axis.end >= 0.35);
        assert!(axis.ticks.len() >= 5);
        assert_eq!(axis.tick_label(0.25), "0.25");
        assert_eq!(axis.tick_label(0.0), "0");
        // Values far from zero are zoomed in on instead.
        let zoomed = ValueAxis::fit(&[0.2, 0.3, 0.35], None);
        assert!(zoomed.start > 0.0 && zoomed.start <= 0.2, "{zoomed:?}");
    }

    #[test]
    fn a_fixed_unit_range_stays_unit() {
        let axis = ValueAxis::fit(&[0.5], Some((0.0, 1.0)));
        assert_eq!((axis.start, axis.end), (0.0, 1.0));
        assert_eq!(axis.tick_label(0.4), "0.4");
    }

    #[test]
    fn a_single_repeated_value_still_gets_a_range() {
        let axis = ValueAxis::fit(&[0.0, 0.0], None);
        assert!(axis.end > axis.start);
        assert_eq!(axis.histogram(&[0.0, 0.0], 10).iter().sum::<usize>(), 2);
    }

    #[test]
    fn summary_has_mean_and_p95() {
        let values: Vec<f64> = (0..=100).map(f64::from).collect();
        let summary = SampleSummary::of(&values).expect("non-empty");
        assert_eq!(summary.count, 101);
        assert_eq!(summary.mean, 50.0);
        assert!((summary.p95 - 95.0).abs() < 1e-12);
        assert!(SampleSummary::of(&[f64::NAN]).is_none());
    }
}
