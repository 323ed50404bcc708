//! Per-layer error heatmap: storage that stays cheap for thousands of tokens, and drawing whose
//! cost depends on the visible bins only (each bin asks a max-tree for its worst value).

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};

use crate::stats::metrics::CheckMetrics;

/// The metric a heatmap colours by; `m` cycles through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeatMetric {
    #[default]
    RelL2,
    MeanAbs,
    Pe,
    UlpMean,
}

impl HeatMetric {
    pub const ALL: [HeatMetric; 4] = [
        HeatMetric::RelL2,
        HeatMetric::MeanAbs,
        HeatMetric::Pe,
        HeatMetric::UlpMean,
    ];

    pub fn name(self) -> &'static str {
        match self {
            HeatMetric::RelL2 => "rel_l2",
            HeatMetric::MeanAbs => "mean_abs",
            HeatMetric::Pe => "pe",
            HeatMetric::UlpMean => "ulp_mean",
        }
    }

    pub fn next(self) -> HeatMetric {
        HeatMetric::ALL[(self.index() + 1) % HeatMetric::ALL.len()]
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The value drawn for a check. A NaN becomes +inf: a broken check must look worst, not absent.
    fn value_of(self, metrics: &CheckMetrics) -> f32 {
        let value = match self {
            HeatMetric::RelL2 => metrics.rel_l2,
            HeatMetric::MeanAbs => metrics.mean_abs,
            HeatMetric::Pe => metrics.pe,
            HeatMetric::UlpMean => metrics.ulp_mean,
        };
        if value.is_nan() {
            f32::INFINITY
        } else {
            value.abs() as f32
        }
    }
}

/// Range maximum over positions; NaN marks "no check yet". Bottom-up segment tree: updates and
/// range queries are O(log n), so a bin costs the same whether it covers 2 tokens or 2000.
#[derive(Debug, Clone, Default)]
struct MaxTree {
    /// Leaf count, a power of two; `nodes[capacity..]` are the leaves.
    capacity: usize,
    nodes: Vec<f32>,
}

impl MaxTree {
    fn set(&mut self, position: usize, value: f32) {
        if position >= self.capacity {
            self.grow(position + 1);
        }
        let mut node = self.capacity + position;
        self.nodes[node] = value;
        while node > 1 {
            node /= 2;
            // f32::max ignores NaN, so empty leaves never hide data.
            self.nodes[node] = self.nodes[2 * node].max(self.nodes[2 * node + 1]);
        }
    }

    fn grow(&mut self, needed: usize) {
        let capacity = needed.next_power_of_two().max(64);
        let mut nodes = vec![f32::NAN; 2 * capacity];
        nodes[capacity..capacity + self.capacity].copy_from_slice(&self.nodes[self.capacity..]);
        for node in (1..capacity).rev() {
            nodes[node] = nodes[2 * node].max(nodes[2 * node + 1]);
        }
        self.capacity = capacity;
        self.nodes = nodes;
    }

    /// Worst value over `start..end`, NaN when no position there has a value.
    fn max(&self, start: usize, end: usize) -> f32 {
        let end = end.min(self.capacity);
        if start >= end {
            return f32::NAN;
        }
        let (mut low, mut high) = (start + self.capacity, end + self.capacity);
        let mut worst = f32::NAN;
        while low < high {
            if low % 2 == 1 {
                worst = worst.max(self.nodes[low]);
                low += 1;
            }
            if high % 2 == 1 {
                high -= 1;
                worst = worst.max(self.nodes[high]);
            }
            low /= 2;
            high /= 2;
        }
        worst
    }
}

/// Smallest positive and largest finite value seen, to place the log colour scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValueRange {
    pub min_positive: f32,
    pub max_finite: f32,
}

impl Default for ValueRange {
    fn default() -> Self {
        ValueRange {
            min_positive: f32::INFINITY,
            max_finite: 0.0,
        }
    }
}

impl ValueRange {
    fn include(&mut self, value: f32) {
        if value > 0.0 && value.is_finite() {
            self.min_positive = self.min_positive.min(value);
            self.max_finite = self.max_finite.max(value);
        }
    }

    pub fn union(self, other: ValueRange) -> ValueRange {
        ValueRange {
            min_positive: self.min_positive.min(other.min_positive),
            max_finite: self.max_finite.max(other.max_finite),
        }
    }
}

/// One sampled layer's values, one max-tree per metric.
#[derive(Debug, Clone)]
struct LayerRow {
    layer: usize,
    metrics: [MaxTree; 4],
}

/// All checks of one verifier in one trial: rows are layers (sorted), columns token positions.
#[derive(Debug, Clone, Default)]
pub struct ErrorGrid {
    rows: Vec<LayerRow>,
    positions: usize,
    ranges: [ValueRange; 4],
}

impl ErrorGrid {
    /// A grid whose rows exist before any check arrives, so the layout does not jump.
    pub fn with_layers(layers: &[usize]) -> ErrorGrid {
        let mut grid = ErrorGrid::default();
        for &layer in layers {
            grid.row_index(layer);
        }
        grid
    }

    pub fn record(&mut self, position: usize, layer: usize, metrics: &CheckMetrics) {
        let row = self.row_index(layer);
        for metric in HeatMetric::ALL {
            let value = metric.value_of(metrics);
            self.rows[row].metrics[metric.index()].set(position, value);
            self.ranges[metric.index()].include(value);
        }
        self.positions = self.positions.max(position + 1);
    }

    fn row_index(&mut self, layer: usize) -> usize {
        match self.rows.binary_search_by_key(&layer, |row| row.layer) {
            Ok(index) => index,
            Err(index) => {
                self.rows.insert(
                    index,
                    LayerRow {
                        layer,
                        metrics: Default::default(),
                    },
                );
                index
            }
        }
    }

    /// Token positions covered so far (highest position with a check, plus one).
    pub fn positions(&self) -> usize {
        self.positions
    }

    pub fn layers(&self) -> Vec<usize> {
        self.rows.iter().map(|row| row.layer).collect()
    }

    pub fn range(&self, metric: HeatMetric) -> ValueRange {
        self.ranges[metric.index()]
    }

    /// Worst value of `metric` over rows `rows` and positions `positions` (NaN: no data).
    pub fn worst(
        &self,
        metric: HeatMetric,
        rows: std::ops::Range<usize>,
        positions: std::ops::Range<usize>,
    ) -> f32 {
        self.rows[rows]
            .iter()
            .map(|row| row.metrics[metric.index()].max(positions.start, positions.end))
            .fold(f32::NAN, f32::max)
    }
}

/// Log colour scale between two powers of ten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColourScale {
    pub low_exponent: i32,
    pub high_exponent: i32,
}

/// Exact zeros: drawn apart from the scale, since log(0) has no place on it.
pub const EXACT_COLOUR: Color = Color::Rgb(70, 70, 90);
/// Non-finite metrics (a broken check): off the scale on purpose.
pub const NON_FINITE_COLOUR: Color = Color::Rgb(255, 0, 255);

/// Stops of the colour ramp, from small errors (cool) to large ones (hot).
const RAMP: [(u8, u8, u8); 6] = [
    (40, 60, 200),
    (0, 160, 220),
    (40, 190, 90),
    (230, 220, 40),
    (245, 130, 20),
    (220, 30, 30),
];

impl ColourScale {
    pub fn from_range(range: ValueRange) -> ColourScale {
        if range.max_finite <= 0.0 {
            return ColourScale {
                low_exponent: -6,
                high_exponent: 0,
            };
        }
        let low_exponent = range.min_positive.log10().floor() as i32;
        let high_exponent = (range.max_finite.log10().ceil() as i32).max(low_exponent + 1);
        ColourScale {
            low_exponent,
            high_exponent,
        }
    }

    pub fn colour(self, value: f32) -> Color {
        if !value.is_finite() {
            return NON_FINITE_COLOUR;
        }
        if value <= 0.0 {
            return EXACT_COLOUR;
        }
        let span = (self.high_exponent - self.low_exponent) as f32;
        let fraction = (value.log10() - self.low_exponent as f32) / span;
        ramp_colour(fraction)
    }
}

fn ramp_colour(fraction: f32) -> Color {
    let scaled = fraction.clamp(0.0, 1.0) * (RAMP.len() - 1) as f32;
    let index = (scaled.floor() as usize).min(RAMP.len() - 2);
    let weight = scaled - index as f32;
    let mix = |a: u8, b: u8| (a as f32 + (b as f32 - a as f32) * weight).round() as u8;
    let (from, to) = (RAMP[index], RAMP[index + 1]);
    Color::Rgb(mix(from.0, to.0), mix(from.1, to.1), mix(from.2, to.2))
}

/// Filled cell glyph; tests count these to see how much of the heatmap is drawn.
pub const CELL: &str = "█";
const LABEL_WIDTH: u16 = 7;

/// Draws `grid` into `area`: one line per layer (grouped when they do not fit), `columns` token
/// positions across (binned to the worst value when wider than the area), an axis line and a
/// legend line.
pub fn render(
    buf: &mut Buffer,
    area: Rect,
    grid: &ErrorGrid,
    metric: HeatMetric,
    columns: usize,
    scale: ColourScale,
) {
    if area.width <= LABEL_WIDTH + 2 || area.height == 0 {
        return;
    }
    let dim = Style::default().fg(Color::DarkGray);
    let rows = grid.rows.len();
    if rows == 0 || columns == 0 {
        buf.set_stringn(
            area.x,
            area.y,
            "waiting for checks…",
            area.width as usize,
            dim,
        );
        return;
    }
    let with_axes = area.height >= 3;
    let plot_height = if with_axes {
        area.height - 2
    } else {
        area.height
    } as usize;
    let plot_width = (area.width - LABEL_WIDTH) as usize;
    let plot_x = area.x + LABEL_WIDTH;

    let (bins, cell_width) = if columns <= plot_width {
        (columns, (plot_width / columns).clamp(1, 4))
    } else {
        (plot_width, 1)
    };
    let row_groups = rows.min(plot_height);
    // Few layers get taller rows, so a handful of layers still reads as a map.
    let row_height = (plot_height / row_groups).clamp(1, 3);
    for group in 0..row_groups {
        let (first, last) = (group * rows / row_groups, (group + 1) * rows / row_groups);
        let top = area.y + (group * row_height) as u16;
        let label = if last - first == 1 {
            format!("L{}", grid.rows[first].layer)
        } else {
            format!("L{}-{}", grid.rows[first].layer, grid.rows[last - 1].layer)
        };
        buf.set_stringn(area.x, top, label, LABEL_WIDTH as usize - 1, dim);
        for bin in 0..bins {
            let positions = bin * columns / bins..(bin + 1) * columns / bins;
            let worst = grid.worst(metric, first..last, positions);
            if worst.is_nan() {
                continue;
            }
            let style = Style::default().fg(scale.colour(worst));
            for line in 0..row_height as u16 {
                for offset in 0..cell_width {
                    let x = plot_x + (bin * cell_width + offset) as u16;
                    buf[(x, top + line)].set_symbol(CELL).set_style(style);
                }
            }
        }
    }
    if with_axes {
        let axis_y = area.y + area.height - 2;
        render_axis(
            buf,
            plot_x,
            axis_y,
            plot_width,
            bins * cell_width,
            columns,
            dim,
        );
        render_legend(
            buf,
            Rect::new(area.x, axis_y + 1, area.width, 1),
            metric,
            scale,
        );
    }
}

fn render_axis(
    buf: &mut Buffer,
    x: u16,
    y: u16,
    plot_width: usize,
    used_width: usize,
    columns: usize,
    style: Style,
) {
    buf.set_stringn(x, y, "tok 0", plot_width, style);
    let last = format!("{}", columns - 1);
    if used_width > last.len() + 6 {
        buf.set_string(x + (used_width - last.len()) as u16, y, &last, style);
    }
    if columns > plot_width {
        let per_bin = columns.div_ceil(plot_width);
        let note = format!("≤{per_bin} tok/col, worst shown");
        if plot_width > note.len() + 20 {
            buf.set_string(x + ((plot_width - note.len()) / 2) as u16, y, note, style);
        }
    }
}

fn render_legend(buf: &mut Buffer, area: Rect, metric: HeatMetric, scale: ColourScale) {
    let mut x = area.x;
    let end = area.x + area.width;
    let mut put = |text: &str, style: Style, x: &mut u16| {
        if *x < end {
            let (next, _) = buf.set_stringn(*x, area.y, text, (end - *x) as usize, style);
            *x = next;
        }
    };
    let plain = Style::default();
    put(
        &format!("{} log: ", metric.name()),
        plain.add_modifier(Modifier::BOLD),
        &mut x,
    );
    let span = scale.high_exponent - scale.low_exponent;
    for exponent in scale.low_exponent..=scale.high_exponent {
        let colour = ramp_colour((exponent - scale.low_exponent) as f32 / span as f32);
        put(CELL, plain.fg(colour), &mut x);
        put(&format!("1e{exponent} "), plain, &mut x);
    }
    put(CELL, plain.fg(EXACT_COLOUR), &mut x);
    put("exact ", plain, &mut x);
    put(CELL, plain.fg(NON_FINITE_COLOUR), &mut x);
    put("NaN/inf", plain, &mut x);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_tree_answers_ranges_and_skips_gaps() {
        let mut tree = MaxTree::default();
        tree.set(3, 0.5);
        tree.set(100, 2.0);
        tree.set(7, 1.0);
        assert!(tree.max(0, 3).is_nan());
        assert_eq!(tree.max(0, 8), 1.0);
        assert_eq!(tree.max(4, 101), 2.0);
        assert!(tree.max(8, 100).is_nan());
        assert!(tree.max(500, 900).is_nan());
    }

    #[test]
    fn scale_spans_whole_decades() {
        let mut range = ValueRange::default();
        range.include(3e-5);
        range.include(0.02);
        range.include(0.0);
        let scale = ColourScale::from_range(range);
        assert_eq!((scale.low_exponent, scale.high_exponent), (-5, -1));
        assert_eq!(scale.colour(0.0), EXACT_COLOUR);
        assert_eq!(scale.colour(f32::INFINITY), NON_FINITE_COLOUR);
        assert_ne!(scale.colour(1e-5), scale.colour(1e-1));
    }
}
