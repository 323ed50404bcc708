//! Cutting text into the rows of a pane by display width, the way ratatui draws it: grapheme by
//! grapheme, a CJK character or an emoji two columns wide, a combining mark none. Counting
//! characters instead overfills rows with wide text, and the renderer clips what does not fit.

use std::ops::Range;

use ratatui::text::{Line, Span};
use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

/// Byte ranges of `line` (one line, no `\n`) cut into rows at most `width` columns wide, after
/// the last space that fits when there is one (a word longer than a row is cut). Every line has
/// at least one row, even an empty one. A grapheme wider than a whole row is skipped by
/// ratatui's renderer, so it takes no room here either.
pub fn row_ranges(line: &str, width: usize) -> Vec<Range<usize>> {
    // Printable ASCII is one column per byte: the common case, read without segmenting.
    if is_plain_ascii(line) {
        let graphemes = line
            .bytes()
            .enumerate()
            .map(|(offset, byte)| (offset, 1, byte == b' '));
        cut_rows(graphemes, line.len(), width)
    } else {
        let graphemes = line
            .grapheme_indices(true)
            .map(|(offset, grapheme)| (offset, grapheme.width(), grapheme == " "));
        cut_rows(graphemes, line.len(), width)
    }
}

/// Rows from `(byte offset, columns, is a space)` of each grapheme of a line `len` bytes long.
fn cut_rows(
    graphemes: impl Iterator<Item = (usize, usize, bool)>,
    len: usize,
    width: usize,
) -> Vec<Range<usize>> {
    let mut rows = Vec::new();
    let (mut start, mut used) = (0, 0);
    // Just after the row's last space: (byte offset, columns used up to there).
    let mut word_break: Option<(usize, usize)> = None;
    for (offset, columns, is_space) in graphemes {
        if columns > width {
            continue;
        }
        if used + columns > width {
            if let Some((at, used_there)) = word_break.take() {
                rows.push(start..at);
                (start, used) = (at, used - used_there);
            }
            // No space to break at, or the carried-over word still leaves no room.
            if used + columns > width {
                rows.push(start..offset);
                (start, used) = (offset, 0);
            }
        }
        used += columns;
        if is_space {
            word_break = Some((offset + 1, used));
        }
    }
    rows.push(start..len);
    rows
}

/// How many rows `line` takes at `width` (as [`row_ranges`] cuts it).
pub fn row_count(line: &str, width: usize) -> usize {
    row_ranges(line, width).len()
}

fn is_plain_ascii(line: &str) -> bool {
    line.bytes().all(|byte| (b' '..=b'~').contains(&byte))
}

/// The `height` rows that end `scroll` rows above the last row of `lines` wrapped at `width`,
/// oldest first, each with the tag of the line it comes from. Lines are wrapped from the newest
/// back only as far as needed, so a long text costs no more per frame than a short one.
pub fn tail_rows<'a, Tag: Copy>(
    lines: impl DoubleEndedIterator<Item = (Tag, &'a str)>,
    width: usize,
    height: usize,
    scroll: usize,
) -> Vec<(Tag, &'a str)> {
    if width == 0 || height == 0 {
        return Vec::new();
    }
    let wanted = height + scroll;
    let mut newest_first = Vec::new();
    for (tag, line) in lines.rev() {
        let rows = row_ranges(line, width);
        newest_first.extend(rows.into_iter().rev().map(|range| (tag, &line[range])));
        if newest_first.len() >= wanted {
            break;
        }
    }
    let skip = scroll.min(newest_first.len().saturating_sub(height));
    let mut shown: Vec<_> = newest_first.into_iter().skip(skip).take(height).collect();
    shown.reverse();
    shown
}

/// `spans` (one line of differently styled pieces) cut into rows at most `width` columns
/// wide, each piece keeping its style.
pub fn wrap_spans(spans: &[Span<'_>], width: usize) -> Vec<Line<'static>> {
    let text: String = spans.iter().map(|span| span.content.as_ref()).collect();
    let mut span_starts = Vec::with_capacity(spans.len());
    let mut offset = 0;
    for span in spans {
        span_starts.push(offset);
        offset += span.content.len();
    }
    row_ranges(&text, width)
        .into_iter()
        .map(|row| {
            let pieces = spans.iter().zip(&span_starts).filter_map(|(span, &start)| {
                let end = start + span.content.len();
                let (from, to) = (row.start.max(start), row.end.min(end));
                (from < to).then(|| Span::styled(text[from..to].to_string(), span.style))
            });
            Line::from(pieces.collect::<Vec<_>>())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(line: &str, width: usize) -> Vec<&str> {
        row_ranges(line, width)
            .into_iter()
            .map(|range| &line[range])
            .collect()
    }

    #[test]
    fn wide_characters_take_two_columns_and_never_straddle_a_row() {
        assert_eq!(rows("a検証", 2), ["a", "検", "証"]);
        assert_eq!(rows("検証テスト", 5), ["検証", "テス", "ト"]);
        // An emoji with its presentation selector, and a letter with a combining accent, are one
        // grapheme each.
        assert_eq!(rows("❤\u{fe0f}e\u{301}xy", 3), ["❤\u{fe0f}e\u{301}", "xy"]);
        assert_eq!(rows("abcdef", 4), ["abcd", "ef"]);
        assert_eq!(rows("", 4), [""]);
        // Words move to the next row whole; one longer than a row is cut.
        assert_eq!(
            rows("lower max_new_tokens to", 10),
            ["lower ", "max_new_to", "kens to"]
        );
        assert_eq!(rows("a 検証", 4), ["a ", "検証"]);
        assert_eq!(row_count("検証テスト", 5), 3);
        assert_eq!(row_count("abcdef", 3), 2);
    }

    #[test]
    fn the_tail_is_taken_from_the_end_and_scrolls_back() {
        let text = "one\n検証テスト\nthree";
        let shown = |scroll| -> Vec<&str> {
            let lines = text.split('\n').map(|line| ((), line));
            tail_rows(lines, 4, 2, scroll)
                .into_iter()
                .map(|(_, row)| row)
                .collect()
        };
        assert_eq!(shown(0), ["thre", "e"]);
        assert_eq!(shown(1), ["ト", "thre"]);
        assert_eq!(shown(4), ["one", "検証"]);
        assert_eq!(
            shown(10),
            ["one", "検証"],
            "no scrolling past the first row"
        );
    }

    #[test]
    fn styled_pieces_keep_their_style_across_rows() {
        use ratatui::style::{Color, Style};
        let red = Style::default().fg(Color::Red);
        let spans = [Span::raw("run · "), Span::styled("failed: too long", red)];
        let rows: Vec<Vec<(String, Style)>> = wrap_spans(&spans, 10)
            .iter()
            .map(|line| {
                line.spans
                    .iter()
                    .map(|span| (span.content.to_string(), span.style))
                    .collect()
            })
            .collect();
        let plain = Style::default();
        assert_eq!(
            rows,
            [
                vec![("run · ".into(), plain)],
                vec![("failed: ".into(), red)],
                vec![("too long".into(), red)],
            ]
        );
    }
}
