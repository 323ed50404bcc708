//! The shared look of every figure: the embedded font, figure and text sizes, colours, and the
//! small drawing helpers (legends, number formatting, colour map) the figure modules share.

use std::sync::OnceLock;

use anyhow::anyhow;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

/// DejaVu Sans is shipped in `assets/fonts/` and compiled in, so figures render the same on a
/// headless machine without any system fonts.
const DEJAVU_SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const DEJAVU_SANS_BOLD: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-Bold.ttf");

/// The family name plotters falls back to for every text it draws on its own (tick labels, …).
pub const FONT_FAMILY: &str = "sans-serif";

/// Size of the multi-panel figures.
pub const GRID_FIGURE_SIZE: (u32, u32) = (2300, 1150);
/// Size of the single-chart figures.
pub const FIGURE_SIZE: (u32, u32) = (1600, 1000);

pub const TITLE_SIZE: u32 = 38;
pub const SUBTITLE_SIZE: u32 = 22;
pub const PANEL_TITLE_SIZE: u32 = 25;
pub const AXIS_DESC_SIZE: u32 = 22;
pub const TICK_LABEL_SIZE: u32 = 19;
pub const LEGEND_SIZE: u32 = 21;
pub const NOTE_SIZE: u32 = 18;

pub const BACKGROUND: RGBColor = WHITE;
pub const TEXT_COLOR: RGBColor = RGBColor(33, 33, 33);
pub const MUTED_TEXT: RGBColor = RGBColor(90, 90, 90);
pub const GRID_COLOR: RGBColor = RGBColor(225, 225, 225);
pub const HONEST_COLOR: RGBColor = RGBColor(31, 119, 180);
pub const CHEAT_COLOR: RGBColor = RGBColor(214, 39, 40);
pub const THRESHOLD_COLOR: RGBColor = RGBColor(20, 20, 20);
/// Cells of a heatmap that have no check behind them.
pub const MISSING_CELL: RGBColor = RGBColor(190, 190, 190);

/// Distinct colours for verifiers and metrics (the widely used "tab10" hues, in order).
pub const SERIES_COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(214, 39, 40),
];

/// Colour of the `index`-th series (verifier, metric), cycling when there are more than ten.
pub fn series_color(index: usize) -> RGBColor {
    SERIES_COLORS[index % SERIES_COLORS.len()]
}

/// Registers the embedded fonts once per process; every figure function calls this first.
pub fn ensure_fonts() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            register_font(FONT_FAMILY, FontStyle::Normal, DEJAVU_SANS)
                .map_err(|_| "DejaVuSans.ttf".to_string())?;
            register_font(FONT_FAMILY, FontStyle::Bold, DEJAVU_SANS_BOLD)
                .map_err(|_| "DejaVuSans-Bold.ttf".to_string())
        })
        .clone()
        .map_err(|name| anyhow!("the embedded font {name} could not be parsed"))
}

/// Regular text of the given pixel size.
pub fn font(size: u32) -> TextStyle<'static> {
    (FONT_FAMILY, size).into_font().color(&TEXT_COLOR)
}

/// Bold text of the given pixel size.
pub fn bold_font(size: u32) -> TextStyle<'static> {
    (FONT_FAMILY, size, FontStyle::Bold)
        .into_font()
        .color(&TEXT_COLOR)
}

/// Width in pixels of a tick label drawn in `area` (estimated from the character count if the
/// font cannot measure it).
pub fn tick_label_width<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, label: &str) -> f64 {
    area.estimate_text_size(label, &font(TICK_LABEL_SIZE))
        .map(|(width, _)| width as f64)
        .unwrap_or(label.chars().count() as f64 * TICK_LABEL_SIZE as f64 * 0.65)
}

/// Writes a figure title and an optional subtitle centred at the top of `area`, and returns
/// the part of `area` below them.
pub fn draw_title<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    subtitle: Option<&str>,
) -> anyhow::Result<DrawingArea<DB, Shift>>
where
    DB::ErrorType: 'static,
{
    let (width, _) = area.dim_in_pixel();
    let center = (width / 2) as i32;
    // A long title (many experiments named) is set smaller rather than cut at both edges.
    let fits = |size: u32| {
        area.estimate_text_size(title, &bold_font(size))
            .is_ok_and(|(w, _)| w + 40 <= width)
    };
    let size = (18..=TITLE_SIZE).rev().find(|&s| fits(s)).unwrap_or(18);
    let title_style = bold_font(size).pos(Pos::new(HPos::Center, VPos::Top));
    area.draw(&Text::new(title.to_string(), (center, 16), title_style))?;
    let mut used = 16 + TITLE_SIZE as i32 + 10;
    if let Some(subtitle) = subtitle {
        let style = font(SUBTITLE_SIZE)
            .color(&MUTED_TEXT)
            .pos(Pos::new(HPos::Center, VPos::Top));
        area.draw(&Text::new(subtitle.to_string(), (center, used), style))?;
        used += SUBTITLE_SIZE as i32 + 10;
    }
    Ok(area.split_vertically(used).1)
}

/// How a legend entry's sample is drawn.
#[derive(Debug, Clone, Copy)]
pub enum LegendMark {
    /// A filled box, as for histogram bars.
    Box(RGBAColor),
    /// A solid line of the given width.
    Line(RGBColor, u32),
    /// A dashed line of the given width.
    Dashed(RGBColor, u32),
    /// A cross, as used for rejected heatmap cells.
    Cross(RGBColor),
}

/// One entry of a hand-drawn legend (plotters' own legend lives inside the plot area, where
/// it hides data; ours sits in reserved space).
#[derive(Debug, Clone)]
pub struct LegendEntry {
    pub mark: LegendMark,
    pub label: String,
}

impl LegendEntry {
    pub fn new(mark: LegendMark, label: impl Into<String>) -> Self {
        Self {
            mark,
            label: label.into(),
        }
    }
}

const LEGEND_SWATCH_WIDTH: i32 = 44;
const LEGEND_GAP: i32 = 10;
const LEGEND_ENTRY_SPACING: i32 = 36;

/// Draws a legend entry's mark in the box whose left edge is `x` and vertical centre `y`.
fn draw_legend_mark<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    mark: LegendMark,
    x: i32,
    y: i32,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let half_height = 9;
    match mark {
        LegendMark::Box(color) => {
            let corners = [
                (x, y - half_height),
                (x + LEGEND_SWATCH_WIDTH, y + half_height),
            ];
            area.draw(&Rectangle::new(corners, color.filled()))?;
            // A thin frame keeps light swatches (white, pale grey) visible.
            area.draw(&Rectangle::new(
                corners,
                MUTED_TEXT.mix(0.6).stroke_width(1),
            ))?;
        }
        LegendMark::Line(color, width) => {
            area.draw(&PathElement::new(
                vec![(x, y), (x + LEGEND_SWATCH_WIDTH, y)],
                color.stroke_width(width),
            ))?;
        }
        LegendMark::Dashed(color, width) => {
            let mut start = x;
            while start < x + LEGEND_SWATCH_WIDTH {
                let end = (start + 9).min(x + LEGEND_SWATCH_WIDTH);
                area.draw(&PathElement::new(
                    vec![(start, y), (end, y)],
                    color.stroke_width(width),
                ))?;
                start += 15;
            }
        }
        LegendMark::Cross(color) => {
            let center = (x + LEGEND_SWATCH_WIDTH / 2, y);
            area.draw(&Cross::new(center, 7, color.stroke_width(3)))?;
        }
    }
    Ok(())
}

/// Width in pixels the legend entry takes when laid out in a row.
fn legend_entry_width<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entry: &LegendEntry,
) -> anyhow::Result<i32>
where
    DB::ErrorType: 'static,
{
    let (text_width, _) = area.estimate_text_size(&entry.label, &font(LEGEND_SIZE))?;
    Ok(LEGEND_SWATCH_WIDTH + LEGEND_GAP + text_width as i32)
}

/// Draws the entries side by side, centred horizontally at height `y` (their vertical
/// centre), wrapping onto further rows when they do not fit; returns the height used.
pub fn draw_legend_row<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry],
    y: i32,
) -> anyhow::Result<i32>
where
    DB::ErrorType: 'static,
{
    let (width, _) = area.dim_in_pixel();
    let available = width as i32 - 40;
    let mut rows: Vec<Vec<(&LegendEntry, i32)>> = vec![Vec::new()];
    let mut row_width = 0;
    for entry in entries {
        let entry_width = legend_entry_width(area, entry)?;
        let needed = if row_width == 0 {
            entry_width
        } else {
            row_width + LEGEND_ENTRY_SPACING + entry_width
        };
        if needed > available && row_width > 0 {
            rows.push(Vec::new());
            row_width = entry_width;
        } else {
            row_width = needed;
        }
        rows.last_mut()
            .expect("rows start non-empty")
            .push((entry, entry_width));
    }
    let row_height = LEGEND_SIZE as i32 + 14;
    for (row_index, row) in rows.iter().enumerate() {
        let total: i32 = row.iter().map(|(_, w)| w).sum::<i32>()
            + LEGEND_ENTRY_SPACING * (row.len() as i32 - 1).max(0);
        let mut x = (width as i32 - total) / 2;
        let row_y = y + row_index as i32 * row_height;
        for (entry, entry_width) in row {
            draw_legend_entry(area, entry, x, row_y)?;
            x += entry_width + LEGEND_ENTRY_SPACING;
        }
    }
    Ok(rows.len() as i32 * row_height)
}

/// One legend entry: its mark at `(x, y)` (left edge, vertical centre) and its label after it.
fn draw_legend_entry<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entry: &LegendEntry,
    x: i32,
    y: i32,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    draw_legend_mark(area, entry.mark, x, y)?;
    let style = font(LEGEND_SIZE).pos(Pos::new(HPos::Left, VPos::Center));
    area.draw(&Text::new(
        entry.label.clone(),
        (x + LEGEND_SWATCH_WIDTH + LEGEND_GAP, y),
        style,
    ))?;
    Ok(())
}

/// Draws the entries one under another starting at `(x, y)` (the first entry's left edge and
/// vertical centre).
pub fn draw_legend_column<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry],
    (x, y): (i32, i32),
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    for (index, entry) in entries.iter().enumerate() {
        let row_y = y + index as i32 * (LEGEND_SIZE as i32 + 18);
        draw_legend_entry(area, entry, x, row_y)?;
    }
    Ok(())
}

/// Compact, readable number: up to three significant digits, scientific notation for very
/// small or large magnitudes.
pub fn format_number(value: f64) -> String {
    if value == 0.0 {
        return "0".to_string();
    }
    if !value.is_finite() {
        return format!("{value}");
    }
    let magnitude = value.abs();
    if !(1e-3..1e5).contains(&magnitude) {
        let text = format!("{value:.2e}");
        // "1.50e-5" -> "1.5e-5", "1.00e-5" -> "1e-5"
        match text.split_once('e') {
            Some((mantissa, exponent)) => {
                let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
                format!("{mantissa}e{exponent}")
            }
            None => text,
        }
    } else {
        let decimals = (2 - magnitude.log10().floor() as i32).clamp(0, 5) as usize;
        let text = format!("{value:.decimals$}");
        if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            text
        }
    }
}

/// "10⁻⁵" for a power of ten, with real superscripts (DejaVu Sans has them).
pub fn power_of_ten_label(exponent: i32) -> String {
    const SUPERSCRIPT_DIGITS: [char; 10] = ['⁰', '¹', '²', '³', '⁴', '⁵', '⁶', '⁷', '⁸', '⁹'];
    if exponent == 0 {
        return "1".to_string();
    }
    if exponent == 1 {
        return "10".to_string();
    }
    let mut label = String::from("10");
    if exponent < 0 {
        label.push('⁻');
    }
    for digit in exponent.unsigned_abs().to_string().chars() {
        let index = digit.to_digit(10).expect("decimal digit") as usize;
        label.push(SUPERSCRIPT_DIGITS[index]);
    }
    label
}

/// Points of the perceptually uniform "viridis" colour map, evenly spaced from 0 to 1.
const VIRIDIS_STOPS: [(u8, u8, u8); 9] = [
    (68, 1, 84),
    (71, 44, 122),
    (59, 81, 139),
    (44, 113, 142),
    (33, 144, 141),
    (39, 173, 129),
    (92, 200, 99),
    (170, 220, 50),
    (253, 231, 37),
];

/// Colour for `fraction` in [0, 1] (clamped) on a dark-blue → yellow scale that stays readable
/// in greyscale and for colour-blind readers.
pub fn colormap(fraction: f64) -> RGBColor {
    let fraction = if fraction.is_finite() {
        fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let scaled = fraction * (VIRIDIS_STOPS.len() - 1) as f64;
    let lower = (scaled.floor() as usize).min(VIRIDIS_STOPS.len() - 2);
    let weight = scaled - lower as f64;
    let (a, b) = (VIRIDIS_STOPS[lower], VIRIDIS_STOPS[lower + 1]);
    let mix = |x: u8, y: u8| (x as f64 + (y as f64 - x as f64) * weight).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_compact() {
        assert_eq!(format_number(0.0), "0");
        assert_eq!(format_number(1.5e-5), "1.5e-5");
        assert_eq!(format_number(1e-7), "1e-7");
        assert_eq!(format_number(0.9), "0.9");
        assert_eq!(format_number(0.123456), "0.123");
        assert_eq!(format_number(23.456), "23.5");
        assert_eq!(format_number(150.0), "150");
    }

    #[test]
    fn powers_of_ten_use_superscripts() {
        assert_eq!(power_of_ten_label(-5), "10⁻⁵");
        assert_eq!(power_of_ten_label(12), "10¹²");
        assert_eq!(power_of_ten_label(0), "1");
    }

    #[test]
    fn colormap_runs_from_dark_to_bright() {
        let dark = colormap(0.0);
        let bright = colormap(1.0);
        assert_eq!((dark.0, dark.1, dark.2), (68, 1, 84));
        assert_eq!((bright.0, bright.1, bright.2), (253, 231, 37));
        assert_eq!(colormap(f64::NAN), dark);
    }
}
