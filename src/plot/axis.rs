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

/// Linear axes whose largest tick is below 10^MIN or at least 10^MAX get their tick labels
/// divided by a shared power of ten ([`ValueAxis::shared_exponent`]).
const SHARED_EXPONENT_MIN: i32 = -2;
const SHARED_EXPONENT_MAX: i32 = 5;

/// Least free space between neighbouring tick labels, in pixels.
pub const TICK_LABEL_GAP_PX: f64 = 14.0;

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
        // Values near f64's limits (±1e308 in a hostile file) make the span overflow: the
        // axis then just spans them, rather than counting ticks to infinity.
        if !(first.is_finite() && last.is_finite() && last - first <= 64.0) {
            return Self {
                scale: Scale::Linear,
                start,
                end,
                ticks: vec![start, end],
                has_clamped_zeros: false,
            };
        }
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

    /// The power of ten every tick label of a linear axis is divided by, when plain decimals
    /// would be long ("0.00125") or mix notations: ticks up to 0.00175 read "0 … 1.75" with
    /// "×10⁻³" in the axis description. None when the labels are plain numbers.
    pub fn shared_exponent(&self) -> Option<i32> {
        if self.scale != Scale::Linear {
            return None;
        }
        let largest = self.ticks.iter().map(|t| t.abs()).fold(0.0, f64::max);
        if largest == 0.0 || !largest.is_finite() {
            return None;
        }
        let exponent = largest.log10().floor() as i32;
        (!(SHARED_EXPONENT_MIN..SHARED_EXPONENT_MAX).contains(&exponent)).then_some(exponent)
    }

    /// Tick label for a drawing coordinate.
    pub fn tick_label(&self, position: f64) -> String {
        match self.scale {
            Scale::Linear => {
                let step = self
                    .ticks
                    .windows(2)
                    .map(|pair| pair[1] - pair[0])
                    .next()
                    .unwrap_or(1.0);
                match self.shared_exponent() {
                    Some(exponent) => {
                        let unit = 10f64.powi(exponent);
                        linear_label(position / unit, step / unit)
                    }
                    None => linear_label(position, step),
                }
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

    /// Whether the tick labels, centred on their ticks along an axis `pixel_width` pixels
    /// long (from `start` to `end`), keep at least `TICK_LABEL_GAP_PX` between neighbours.
    /// `label_width` measures a label in pixels.
    pub fn labels_fit(&self, pixel_width: f64, label_width: &impl Fn(&str) -> f64) -> bool {
        let span = self.end - self.start;
        if span <= 0.0 {
            return true;
        }
        let pixels_per_unit = pixel_width / span;
        let widths: Vec<f64> = self
            .ticks
            .iter()
            .map(|t| label_width(&self.tick_label(*t)))
            .collect();
        self.ticks
            .windows(2)
            .zip(widths.windows(2))
            .all(|(ticks, widths)| {
                (ticks[1] - ticks[0]) * pixels_per_unit
                    >= (widths[0] + widths[1]) / 2.0 + TICK_LABEL_GAP_PX
            })
    }

    /// Drops ticks until their labels fit along an axis `pixel_width` pixels long (see
    /// [`Self::labels_fit`]): a linear axis moves to the next round step (0.25 → 0.5 → 1 …),
    /// a log axis first drops the 2× and 5× ticks, then keeps every second, third … decade.
    /// The range is kept, so the data and the histogram bins do not move; at least two ticks
    /// stay even if those still collide.
    pub fn with_ticks_fitting(self, pixel_width: f64, label_width: impl Fn(&str) -> f64) -> Self {
        if self.labels_fit(pixel_width, &label_width) {
            return self;
        }
        let mut candidates: Vec<Vec<f64>> = Vec::new();
        match self.scale {
            Scale::Linear => {
                let mut step = self
                    .ticks
                    .windows(2)
                    .map(|pair| pair[1] - pair[0])
                    .next()
                    .unwrap_or(self.end - self.start);
                // Each round step is larger than the last; the cap only guards odd floats.
                for _ in 0..64 {
                    step = nice_step(step * (1.0 + 1e-6));
                    let ticks = multiples_within(step, self.start, self.end);
                    if ticks.len() < 2 {
                        break;
                    }
                    candidates.push(ticks);
                }
            }
            Scale::Log { .. } => {
                let decades: Vec<f64> = self
                    .ticks
                    .iter()
                    .copied()
                    .filter(|t| (t - t.round()).abs() < 1e-9)
                    .collect();
                candidates.push(decades.clone());
                for every in 2..decades.len() {
                    let ticks: Vec<f64> = decades.iter().copied().step_by(every).collect();
                    if ticks.len() < 2 {
                        break;
                    }
                    candidates.push(ticks);
                }
            }
        }
        let mut fitted = self.clone();
        for ticks in candidates {
            fitted.ticks = ticks;
            if fitted.labels_fit(pixel_width, &label_width) {
                break;
            }
        }
        fitted
    }

    /// Axis description: the quantity, plus how the scale treats it.
    pub fn describe(&self, quantity: &str) -> String {
        match self.scale {
            Scale::Linear => match self.shared_exponent() {
                Some(exponent) => format!("{quantity} (×{})", power_of_ten_label(exponent)),
                None => quantity.to_string(),
            },
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

/// Label of a linear tick at `value`, with as many decimals as the tick `step` needs, so
/// 1.025 is not shown as "1.03".
fn linear_label(value: f64, step: f64) -> String {
    let magnitude = value.abs().max(step);
    if !(1e-3..1e5).contains(&magnitude) {
        return format_number(value);
    }
    if value.abs() < step * 1e-6 {
        return "0".to_string();
    }
    let decimals = (0..=6)
        .find(|&d| {
            let scale = 10f64.powi(d);
            ((step * scale).round() - step * scale).abs() < 1e-6 * scale.max(1.0)
        })
        .unwrap_or(6) as usize;
    format!("{value:.decimals$}")
}

/// The multiples of `step` within `start..=end`; none when there would be more than an axis
/// can show (a span that overflowed, in a hostile file).
fn multiples_within(step: f64, start: f64, end: f64) -> Vec<f64> {
    let first = (start / step - 1e-9).ceil();
    let last = (end / step + 1e-9).floor();
    if !(first.is_finite() && last.is_finite() && last - first <= 1000.0) {
        return Vec::new();
    }
    (first as i64..=last as i64)
        .map(|k| k as f64 * step)
        .collect()
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

    /// Roughly DejaVu Sans at the tick label size: 12 px per character.
    fn twelve_px_per_char(label: &str) -> f64 {
        label.chars().count() as f64 * 12.0
    }

    #[test]
    fn small_linear_ticks_share_one_power_of_ten() {
        // The "Pe" panel: ticks every 0.00025 up to 0.00175 used to read "2.5e-4 … 0.00100".
        let axis = ValueAxis::fit(&[0.0, 0.0, 0.0017], None);
        assert_eq!(axis.shared_exponent(), Some(-3));
        let labels: Vec<String> = axis.ticks.iter().map(|t| axis.tick_label(*t)).collect();
        assert_eq!(
            labels,
            ["0", "0.25", "0.50", "0.75", "1.00", "1.25", "1.50", "1.75"]
        );
        assert_eq!(axis.describe("Pe"), "Pe (×10⁻³)");
        // "mean |Δ|": one notation for every tick.
        let axis = ValueAxis::fit(&[2e-6, 4e-5], None);
        assert_eq!(axis.shared_exponent(), Some(-5));
        assert_eq!(axis.tick_label(1.5e-5), "1.5");
        assert_eq!(axis.describe("mean |Δ|"), "mean |Δ| (×10⁻⁵)");
        // Ordinary magnitudes keep plain labels.
        let axis = ValueAxis::fit(&[0.0, 0.05], None);
        assert_eq!(axis.shared_exponent(), None);
        assert_eq!(axis.tick_label(0.01), "0.01");
        assert_eq!(axis.describe("Pw"), "Pw");
    }

    #[test]
    fn ticks_are_thinned_until_their_labels_fit_the_width() {
        // 0 … 1.025 by 0.025: 42 labels such as "0.025" (60 px) cannot share 400 px.
        let axis = ValueAxis::linear(0.0, 1.0e-2).with_ticks_fitting(400.0, twelve_px_per_char);
        assert_eq!(axis.scale, Scale::Linear);
        assert!(axis.labels_fit(400.0, &twelve_px_per_char), "{axis:?}");
        let wide = ValueAxis::linear(1.0, 1.000_35);
        assert!(!wide.labels_fit(300.0, &twelve_px_per_char));
        let fitted = wide.clone().with_ticks_fitting(300.0, twelve_px_per_char);
        assert!(fitted.labels_fit(300.0, &twelve_px_per_char), "{fitted:?}");
        assert!(fitted.ticks.len() >= 2 && fitted.ticks.len() < wide.ticks.len());
        // The range (and so the histogram bins) stays; the ticks stay round and inside it.
        assert_eq!((fitted.start, fitted.end), (wide.start, wide.end));
        let step = fitted.ticks[1] - fitted.ticks[0];
        assert!(fitted.ticks.iter().all(|t| {
            *t >= fitted.start - 1e-12
                && *t <= fitted.end + 1e-12
                && ((t / step) - (t / step).round()).abs() < 1e-6
        }));
        // Every neighbouring pair keeps the gap: centre distance ≥ mean width + gap.
        let pixels_per_unit = 300.0 / (fitted.end - fitted.start);
        for pair in fitted.ticks.windows(2) {
            let widths: f64 = pair
                .iter()
                .map(|t| twelve_px_per_char(&fitted.tick_label(*t)))
                .sum();
            assert!((pair[1] - pair[0]) * pixels_per_unit >= widths / 2.0 + TICK_LABEL_GAP_PX);
        }
        // Labels that already fit are left alone.
        let roomy = ValueAxis::linear(0.0, 1.0);
        assert_eq!(
            roomy.clone().with_ticks_fitting(1000.0, twelve_px_per_char),
            roomy
        );
    }

    #[test]
    fn a_narrow_log_axis_drops_intermediate_ticks_then_decades() {
        let axis = ValueAxis::log(0.3, 0.9, false);
        let fitted = axis.with_ticks_fitting(60.0, twelve_px_per_char);
        assert_eq!(fitted.ticks, [-1.0, 0.0]);
        let decades = ValueAxis::log(1e-12, 1.0, false);
        let fitted = decades.with_ticks_fitting(150.0, twelve_px_per_char);
        assert!(fitted.labels_fit(150.0, &twelve_px_per_char), "{fitted:?}");
        assert!(fitted.ticks.len() >= 2);
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
