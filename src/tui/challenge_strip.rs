//! The challenged-layer strip of a segment-mode verifier (docs/commitment.md): one cell per
//! decoder layer 0..L, the layers its challenge drew marked and coloured by their result
//! (green: the recomputed layer matched the committed states, red: it did not), the others
//! dim. Where L is wider than the space, a cell covers several layers and shows the worst.

use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};

use crate::record::segment_result::SegmentRecord;

/// What one cell of the strip stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cell {
    NotChallenged,
    /// Challenged, but the verification was cancelled before this layer was recomputed.
    NotRecomputed,
    Passed,
    Failed,
}

impl Cell {
    fn symbol(self) -> &'static str {
        match self {
            Cell::NotChallenged => "·",
            Cell::NotRecomputed => "○",
            Cell::Passed => "■",
            Cell::Failed => "✗",
        }
    }

    fn style(self) -> Style {
        match self {
            Cell::NotChallenged => Style::default().fg(Color::DarkGray),
            Cell::NotRecomputed => Style::default().fg(Color::Yellow),
            Cell::Passed => Style::default().fg(Color::Green),
            Cell::Failed => Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        }
    }
}

/// The cells for `width` columns: layer l falls in cell l · cells / L.
fn cells(record: &SegmentRecord, width: usize) -> Vec<Cell> {
    let layers = record.n_layers.max(1);
    let count = layers.min(width.max(1));
    let mut cells = vec![Cell::NotChallenged; count];
    for &layer in &record.challenged_layers {
        cells[(layer.min(layers - 1) * count) / layers] = Cell::NotRecomputed;
    }
    for layer in &record.layers {
        let cell = &mut cells[(layer.layer.min(layers - 1) * count) / layers];
        *cell = match (*cell, layer.pass) {
            (Cell::Failed, _) | (_, false) => Cell::Failed,
            _ => Cell::Passed,
        };
    }
    cells
}

/// The line under the strip where the run timed the reference prefill (docs/commitment.md):
/// `full prefill 2.78 s · segment 0.42× · a layer 0.019×` (this whole segment verification, and
/// one challenged layer's recomputation, as fractions of the prefill); None without.
pub fn full_prefill_line(record: &SegmentRecord) -> Option<Line<'static>> {
    let full = record.full_prefill_s?;
    let mut words = format!("    full prefill {full:.2} s");
    if let Some(segment) = record.segment_to_full_prefill {
        words += &format!(" · segment {segment:.2}×");
    }
    if let Some(layer) = record.layer_to_full_prefill {
        words += &format!(" · a layer {layer:.3}×");
    }
    Some(Line::styled(words, Style::default().fg(Color::Gray)))
}

/// One line: `L0 ·■···✗··· L29 2/30 · 1 failed · 1.3 MB · 478 proofs · layers 0.04 s of
/// 0.10 s` (recomputing the challenged layers, of the whole segment verification), cut to `width`
/// columns: the strip first (a cell per layer where it fits), the words in what is left.
pub fn strip_line(record: &SegmentRecord, width: u16) -> Line<'static> {
    let width = width as usize;
    let last = record.n_layers.saturating_sub(1);
    let failed = record.layers.iter().filter(|l| !l.pass).count();
    let done = record.layers.len();
    let verdict = if done < record.challenged_layers.len() {
        // Cancelled midway: how many of the challenged layers were recomputed.
        let failed = if failed == 0 {
            String::new()
        } else {
            format!(", {failed} failed")
        };
        format!(
            "cancelled {done}/{}{failed}",
            record.challenged_layers.len()
        )
    } else if failed == 0 {
        "all matched".to_string()
    } else {
        format!("{failed} failed")
    };
    let summary = format!(
        " {}/{} · {verdict}{} · {:.1} MB · {} proofs · layers {:.2} s of {:.2} s",
        record.challenged_layers.len(),
        record.n_layers,
        update_words(record),
        record.bytes_received as f64 / 1e6,
        record.proofs_checked,
        record.recompute_s,
        record.time_s
    );
    let (head, tail) = ("L0 ".to_string(), format!(" L{last}"));
    let room = width.saturating_sub(head.len() + tail.len());
    // A cell per layer where it fits; the words take what is left.
    let strip_width = room.min(record.n_layers);
    let dim = Style::default().fg(Color::DarkGray);
    let mut spans = vec![Span::styled(head, dim)];
    spans.extend(
        cells(record, strip_width)
            .into_iter()
            .map(|c| Span::styled(c.symbol(), c.style())),
    );
    spans.push(Span::styled(tail, dim));
    spans.push(Span::styled(
        summary,
        if failed == 0 {
            Style::default().fg(Color::Gray)
        } else {
            Style::default().fg(Color::Red)
        },
    ));
    Line::from(spans)
}

/// ` · update z 13.6>6`: the largest layer-update z of the challenged layers against its limit
/// (docs/policy.md "Segment mode"), empty for files written before the check existed.
fn update_words(record: &SegmentRecord) -> String {
    let mut worst: Option<(f64, f64)> = None;
    for u in record.layers.iter().filter_map(|l| l.update.as_ref()) {
        // NaN is the worst a layer can give.
        let worse = worst.is_none_or(|(z, _)| u.z_max.is_nan() || (!z.is_nan() && u.z_max > z));
        if worse {
            worst = Some((u.z_max, u.limit));
        }
    }
    match worst {
        None => String::new(),
        Some((z, limit)) => {
            let relation = if z <= limit { "≤" } else { ">" };
            format!(" · update z {z:.1}{relation}{limit}")
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::record::segment_result::{LayerUpdateRecord, SegmentLayerRecord};

    pub(crate) fn record(n_layers: usize, layers: &[(usize, bool)]) -> SegmentRecord {
        SegmentRecord {
            root: "ab".repeat(32),
            nonce: "cd".repeat(32),
            secret: "ef".repeat(32),
            n_layers,
            challenged_layers: layers.iter().map(|l| l.0).collect(),
            token_positions: None,
            proofs_checked: 478,
            bytes_received: 1_277_667,
            layers: layers
                .iter()
                .map(|&(layer, pass)| SegmentLayerRecord {
                    layer,
                    positions: 66,
                    accepted: if pass { 66 } else { 0 },
                    recompute_s: 0.02,
                    pass,
                    // Figures of the kind measured: honest z ≈ 2, a q4 layer ≈ 14.
                    update: Some(LayerUpdateRecord {
                        accepted: if pass { 66 } else { 1 },
                        z_median: if pass { 0.8 } else { 13.6 },
                        z_max: if pass { 2.1 } else { 22.4 },
                        limit: 6.0,
                    }),
                })
                .collect(),
            embedding_rows: 66,
            embedding_rows_accepted: 66,
            recompute_s: 0.04,
            time_s: 0.1,
            full_prefill_s: None,
            segment_to_full_prefill: None,
            layer_to_full_prefill: None,
        }
    }

    #[test]
    fn one_cell_per_layer_where_it_fits_else_the_worst_of_each_bin() {
        let r = record(30, &[(4, true), (13, false)]);
        let one = cells(&r, 80);
        assert_eq!(one.len(), 30);
        assert_eq!(one[4], Cell::Passed);
        assert_eq!(one[13], Cell::Failed);
        assert_eq!(
            one.iter().filter(|c| **c == Cell::NotChallenged).count(),
            28
        );
        // 10 cells of 3 layers: 12..=14 in cell 4, failed wins.
        let binned = cells(&record(30, &[(12, true), (13, false)]), 10);
        assert_eq!(binned.len(), 10);
        assert_eq!(binned[4], Cell::Failed);
        assert_eq!(binned[1], Cell::NotChallenged);
    }

    #[test]
    fn the_words_give_the_worst_layer_update_against_its_limit() {
        let text = |r: &SegmentRecord| -> String {
            strip_line(r, 200)
                .spans
                .iter()
                .map(|s| s.content.to_string())
                .collect()
        };
        let honest = text(&record(30, &[(4, true), (9, true)]));
        assert!(
            honest.contains("all matched · update z 2.1≤6 · "),
            "{honest}"
        );
        let caught = text(&record(30, &[(4, true), (13, false)]));
        assert!(caught.contains("1 failed · update z 22.4>6 · "), "{caught}");
        let mut old = record(30, &[(4, true)]);
        old.layers[0].update = None;
        assert!(text(&old).contains("all matched · 1.3 MB"));
    }
}
