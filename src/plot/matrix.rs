//! The cheat matrix's two figures: a grid of rows × pairings coloured by the rate of trials the
//! sequential test rejected (detection for cheats, false alarms for controls) and annotated with
//! the median tokens to detection; and per pairing, for each cheat, the fraction of its trials
//! detected within t tokens.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::style::{
    bold_font, colormap, draw_title, ensure_fonts, font, series_color, AXIS_DESC_SIZE, BACKGROUND,
    FIGURE_SIZE, GRID_COLOR, MISSING_CELL, NOTE_SIZE, PANEL_TITLE_SIZE, SERIES_COLORS,
    TICK_LABEL_SIZE,
};
use crate::experiment::matrix::{MatrixReport, RowKind};

/// Rows × pairings, coloured by rejected fraction, annotated with rate and tokens.
pub fn draw_matrix(report: &MatrixReport, path: &Path) -> anyhow::Result<()> {
    ensure_fonts()?;
    // Each row keeps room for its two lines of text, however many rows the matrix has.
    let rows_height = 240 + 56 * report.rows.len() as u32;
    let size = (FIGURE_SIZE.0, FIGURE_SIZE.1.max(rows_height));
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&BACKGROUND)?;
    let subtitle = format!(
        "colour: fraction of trials rejected (sequential test at α = {}, β = {}, or token \
         checks); cheats: detection · median tokens; controls: false alarms",
        report.alpha, report.beta
    );
    let body = draw_title(&root, "Cheat matrix: detection by pairing", Some(&subtitle))?;
    let (width, height) = body.dim_in_pixel();
    let (left, top, bottom) = (260i32, 60i32, 40i32);
    let cols = report.pairings.len().max(1) as i32;
    let rows = report.rows.len().max(1) as i32;
    let cell_w = (width as i32 - left - 40) / cols;
    let cell_h = (height as i32 - top - bottom) / rows;
    for (c, p) in report.pairings.iter().enumerate() {
        let x = left + c as i32 * cell_w + cell_w / 2;
        body.draw(&Text::new(
            p.label.clone(),
            (x, top - 12),
            bold_font(PANEL_TITLE_SIZE).pos(Pos::new(HPos::Center, VPos::Bottom)),
        ))?;
    }
    for (r, row) in report.rows.iter().enumerate() {
        let y0 = top + r as i32 * cell_h;
        let label = match row.kind {
            RowKind::Cheat => row.id.clone(),
            RowKind::Control => format!("{} (control)", row.id),
        };
        body.draw(&Text::new(
            label,
            (left - 14, y0 + cell_h / 2),
            font(AXIS_DESC_SIZE).pos(Pos::new(HPos::Right, VPos::Center)),
        ))?;
        for (c, p) in report.pairings.iter().enumerate() {
            let x0 = left + c as i32 * cell_w;
            let cell = report.cell(&row.id, &p.id);
            let decided = cell.filter(|c| c.rejected.trials > 0);
            let fill = decided.map_or(MISSING_CELL, |c| colormap(c.rejected.rate));
            body.draw(&Rectangle::new(
                [(x0 + 2, y0 + 2), (x0 + cell_w - 2, y0 + cell_h - 2)],
                fill.filled(),
            ))?;
            body.draw(&Rectangle::new(
                [(x0 + 2, y0 + 2), (x0 + cell_w - 2, y0 + cell_h - 2)],
                GRID_COLOR.stroke_width(1),
            ))?;
            let (line1, line2) = match decided {
                None => (
                    if cell.is_some_and(|c| !c.trials.is_empty()) {
                        "uncalibrated".to_string()
                    } else {
                        "not run".to_string()
                    },
                    String::new(),
                ),
                Some(c) => (
                    format!(
                        "{}{:.2} ({}/{})",
                        if row.kind == RowKind::Control {
                            "FA "
                        } else {
                            ""
                        },
                        c.rejected.rate,
                        c.rejected.successes,
                        c.rejected.trials
                    ),
                    match (row.kind, c.median_tokens_to_detection) {
                        (RowKind::Cheat, Some(1)) => "1 token".into(),
                        (RowKind::Cheat, Some(t)) => format!("{t} tokens"),
                        (RowKind::Cheat, None) => "not detected".into(),
                        (RowKind::Control, _) => String::new(),
                    },
                ),
            };
            // Dark text on the bright end of the scale, white on the dark end.
            let bright = decided.is_none_or(|c| c.rejected.rate > 0.6);
            let color = if bright { BLACK } else { WHITE };
            let cx = x0 + cell_w / 2;
            // A control's cell has one line: centred, not above the middle.
            let (line1_y, line1_anchor) = if line2.is_empty() {
                (y0 + cell_h / 2, VPos::Center)
            } else {
                (y0 + cell_h / 2 - 4, VPos::Bottom)
            };
            body.draw(&Text::new(
                line1,
                (cx, line1_y),
                bold_font(TICK_LABEL_SIZE + 2)
                    .color(&color)
                    .pos(Pos::new(HPos::Center, line1_anchor)),
            ))?;
            body.draw(&Text::new(
                line2,
                (cx, y0 + cell_h / 2 + 4),
                font(TICK_LABEL_SIZE)
                    .color(&color)
                    .pos(Pos::new(HPos::Center, VPos::Top)),
            ))?;
        }
    }
    root.present()?;
    Ok(())
}

/// Per pairing: for each cheat, the fraction of its trials detected within t tokens.
pub fn draw_detection_curves(report: &MatrixReport, path: &Path) -> anyhow::Result<()> {
    ensure_fonts()?;
    let root = BitMapBackend::new(path, FIGURE_SIZE).into_drawing_area();
    root.fill(&BACKGROUND)?;
    let body = draw_title(
        &root,
        "Tokens to detection per cheat",
        Some("fraction of a cheat's trials rejected (sequential test or token checks) after t generated tokens"),
    )?;
    let n = report.pairings.len().max(1);
    let cols = n.min(2);
    let panels = body.split_evenly((n.div_ceil(cols), cols));
    let max_tokens = report.max_new_tokens.max(1) as f64;
    let cheats: Vec<&str> = report
        .rows
        .iter()
        .filter(|r| r.kind == RowKind::Cheat)
        .map(|r| r.id.as_str())
        .collect();
    for (panel, pairing) in panels.iter().zip(&report.pairings) {
        let mut chart = ChartBuilder::on(panel)
            .caption(pairing.label.clone(), bold_font(PANEL_TITLE_SIZE))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..max_tokens, 0.0..1.05)?;
        chart
            .configure_mesh()
            .x_desc("tokens")
            .y_desc("detected")
            .label_style(font(TICK_LABEL_SIZE))
            .axis_desc_style(font(NOTE_SIZE))
            .light_line_style(GRID_COLOR)
            .draw()?;
        for (i, cheat) in cheats.iter().enumerate() {
            let Some(cell) = report.cell(cheat, &pairing.id) else {
                continue;
            };
            let decided: Vec<Option<usize>> = cell
                .trials
                .iter()
                .filter(|t| t.rejected.is_some())
                .map(|t| {
                    (t.rejected == Some(true))
                        .then_some(t.tokens_to_rejection)
                        .flatten()
                })
                .collect();
            if decided.is_empty() {
                continue;
            }
            let total = decided.len() as f64;
            let points: Vec<(f64, f64)> = (0..=report.max_new_tokens)
                .map(|t| {
                    let within = decided.iter().filter(|d| d.is_some_and(|d| d <= t)).count();
                    (t as f64, within as f64 / total)
                })
                .collect();
            let color = series_color(i);
            // The palette has SERIES_COLORS.len() colours; the cheats after it are dashed, so
            // no two curves look alike.
            let dashed = i >= SERIES_COLORS.len();
            let series = if dashed {
                chart.draw_series(DashedLineSeries::new(points, 9, 6, color.stroke_width(3)))?
            } else {
                chart.draw_series(LineSeries::new(points, color.stroke_width(3)))?
            };
            series.label(cheat.to_string()).legend(move |(x, y)| {
                let style = color.stroke_width(3);
                let first = if dashed { 9 } else { 24 };
                let second = if dashed { (15, 24) } else { (24, 24) };
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (first, 0)], style)
                    + PathElement::new(vec![(second.0, 0), (second.1, 0)], style)
            });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font(font(NOTE_SIZE))
            .background_style(WHITE.mix(0.8))
            .border_style(GRID_COLOR)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::matrix::{aggregate, CellTrials, MatrixConfig};

    #[test]
    fn both_figures_are_drawn_from_a_small_matrix() {
        let (mut config, name) = MatrixConfig::load(None, None).unwrap();
        config.select(Some("f32,native"), Some("q4_0")).unwrap();
        let mut cells = CellTrials::new();
        cells.insert(
            ("honest".into(), "f32".into()),
            (0..3)
                .map(|i| crate::testutil::trials::trial("exp1", i, true, &[8, 16], 20))
                .collect(),
        );
        cells.insert(
            ("q4_0".into(), "f32".into()),
            (0..3)
                .map(|i| crate::testutil::trials::trial("exp3", i, false, &[8, 16], 20))
                .collect(),
        );
        let report = aggregate(&config, &name, 0, &cells);
        let dir = tempfile::tempdir().unwrap();
        let (grid, curves) = (dir.path().join("matrix.png"), dir.path().join("curves.png"));
        draw_matrix(&report, &grid).unwrap();
        draw_detection_curves(&report, &curves).unwrap();
        for png in [grid, curves] {
            let bytes = std::fs::read(&png).unwrap();
            assert_eq!(&bytes[1..4], b"PNG");
            assert!(
                bytes.len() > 10_000,
                "{}: {} bytes",
                png.display(),
                bytes.len()
            );
        }
    }
}
