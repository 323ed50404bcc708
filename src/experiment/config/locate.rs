//! Key paths (`experiments.exp3.verifiers[1].model`) and [`locate_key`], which finds where
//! one is written in a YAML text so that semantic errors can name a line and column.

use std::fmt;

/// One step of a key path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSegment {
    Key(String),
    Index(usize),
}

/// A path into a YAML document, written `experiments.exp3.verifiers[1].model`. Kept as
/// segments because keys may contain dots (`qwen2.5-7b-instruct`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<PathSegment>);

impl KeyPath {
    pub fn root() -> Self {
        KeyPath(Vec::new())
    }

    pub fn key(&self, key: &str) -> Self {
        let mut next = self.clone();
        next.0.push(PathSegment::Key(key.to_string()));
        next
    }

    pub fn index(&self, index: usize) -> Self {
        let mut next = self.clone();
        next.0.push(PathSegment::Index(index));
        next
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                PathSegment::Key(key) if i == 0 => write!(f, "{key}")?,
                PathSegment::Key(key) => write!(f, ".{key}")?,
                PathSegment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A node's place while scanning: content that starts on the header line (`inline`, as
/// line index and byte column) and the following lines that belong to it (`body`).
#[derive(Debug, Clone)]
struct Scope {
    inline: Option<(usize, usize)>,
    body: std::ops::Range<usize>,
}

pub(super) fn is_significant(line: &str) -> bool {
    let trimmed = line.trim();
    !trimmed.is_empty() && !trimmed.starts_with('#') && trimmed != "---" && trimmed != "..."
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_dash_item(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

/// Finds where `path` is written in `text` and returns the 1-based (line, column) of the
/// deepest segment found: the key of a mapping entry, the dash (or flow element) of a
/// sequence item. Handles block style and single-line flow collections (`{a: 1}`, `[1, 2]`),
/// which is all our config files use. None when not even the first segment is found.
pub fn locate_key(text: &str, path: &KeyPath) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut scope = Scope {
        inline: None,
        body: 0..lines.len(),
    };
    let mut found = None;
    for segment in &path.0 {
        let next = match segment {
            PathSegment::Key(key) => find_key(&lines, &scope, key),
            PathSegment::Index(index) => find_index(&lines, &scope, *index),
        };
        match next {
            Some((position, inner)) => {
                found = Some(position);
                scope = inner;
            }
            None => break,
        }
    }
    found.map(|(line, byte_col)| (line + 1, lines[line][..byte_col].chars().count() + 1))
}

/// The positions of a block node's direct children: the inline start plus every body line
/// at the same indentation as the first child.
fn child_positions(lines: &[&str], scope: &Scope) -> Vec<(usize, usize)> {
    let mut positions = Vec::new();
    let level = match scope.inline {
        Some(position) => {
            positions.push(position);
            position.1
        }
        None => match scope.body.clone().find(|&i| is_significant(lines[i])) {
            Some(first) => indent_of(lines[first]),
            None => return positions,
        },
    };
    for i in scope.body.clone() {
        if is_significant(lines[i]) && indent_of(lines[i]) == level {
            positions.push((i, level));
        }
    }
    positions
}

/// The body of a node that starts at column `column` of line `line`: following lines until
/// one is indented less (or equally, unless `allow_same_indent_items` and it is a `- ` item,
/// which YAML allows for a sequence under a mapping key).
fn body_after(
    lines: &[&str],
    line: usize,
    column: usize,
    limit: usize,
    allow_same_indent_items: bool,
) -> std::ops::Range<usize> {
    let mut end = line + 1;
    while end < limit {
        let text = lines[end];
        if is_significant(text) {
            let indent = indent_of(text);
            let same_level_item =
                allow_same_indent_items && indent == column && is_dash_item(text.trim_start());
            if indent < column || (indent == column && !same_level_item) {
                break;
            }
        }
        end += 1;
    }
    line + 1..end
}

/// Byte column of the first non-space character at or after `column`, unless the rest of the
/// line is empty or a comment.
fn content_start(line: &str, column: usize) -> Option<usize> {
    let rest = line.get(column..)?;
    let skipped = rest.len() - rest.trim_start().len();
    let trimmed = rest.trim_start();
    (!trimmed.is_empty() && !trimmed.starts_with('#')).then_some(column + skipped)
}

/// Length of `key` as written at the start of `text` (bare or quoted) when `text` is that
/// key followed by a colon.
fn key_written_at(text: &str, key: &str) -> Option<usize> {
    for (open, close) in [("", ""), ("\"", "\""), ("'", "'")] {
        let written = format!("{open}{key}{close}");
        if let Some(rest) = text.strip_prefix(&written) {
            let after_colon = rest.strip_prefix(':')?;
            if after_colon.is_empty() || after_colon.starts_with([' ', '\t']) {
                return Some(written.len());
            }
        }
    }
    None
}

fn find_key(lines: &[&str], scope: &Scope, key: &str) -> Option<((usize, usize), Scope)> {
    if let Some((line, column)) = scope.inline {
        if lines[line][column..].starts_with('{') {
            return find_in_flow(lines[line], column, FlowLookup::Key(key)).map(
                |(position, value)| {
                    (
                        (line, position),
                        Scope {
                            inline: Some((line, value)),
                            body: 0..0,
                        },
                    )
                },
            );
        }
    }
    for (line, column) in child_positions(lines, scope) {
        let Some(key_len) = key_written_at(&lines[line][column..], key) else {
            continue;
        };
        let value_column = column + key_len + 1;
        let inline = content_start(lines[line], value_column)
            .filter(|&start| !lines[line][start..].starts_with(['|', '>']))
            .map(|start| (line, start));
        let body = body_after(lines, line, column, scope.body.end.max(line + 1), true);
        return Some(((line, column), Scope { inline, body }));
    }
    None
}

fn find_index(lines: &[&str], scope: &Scope, index: usize) -> Option<((usize, usize), Scope)> {
    if let Some((line, column)) = scope.inline {
        if lines[line][column..].starts_with('[') {
            return find_in_flow(lines[line], column, FlowLookup::Index(index)).map(
                |(position, _)| {
                    (
                        (line, position),
                        Scope {
                            inline: Some((line, position)),
                            body: 0..0,
                        },
                    )
                },
            );
        }
    }
    let (line, column) = child_positions(lines, scope)
        .into_iter()
        .filter(|&(line, column)| is_dash_item(&lines[line][column..]))
        .nth(index)?;
    let inline = content_start(lines[line], column + 1).map(|start| (line, start));
    // Lines of an item are those indented past its dash.
    let body = body_after(lines, line, column + 1, scope.body.end.max(line + 1), false);
    Some(((line, column), Scope { inline, body }))
}

enum FlowLookup<'a> {
    Key(&'a str),
    Index(usize),
}

/// Looks inside a single-line flow collection starting at `open` (`{` or `[`). Returns the
/// byte column of the matching entry and of its value.
fn find_in_flow(line: &str, open: usize, lookup: FlowLookup<'_>) -> Option<(usize, usize)> {
    let bytes = line.as_bytes();
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    let mut entry_starts = Vec::new();
    let mut expecting_entry = false;
    for (i, &byte) in bytes.iter().enumerate().skip(open) {
        if let Some(q) = quote {
            if byte == q {
                quote = None;
            }
            continue;
        }
        if expecting_entry
            && depth == 1
            && !byte.is_ascii_whitespace()
            && byte != b']'
            && byte != b'}'
        {
            entry_starts.push(i);
            expecting_entry = false;
        }
        match byte {
            b'"' | b'\'' => quote = Some(byte),
            b'[' | b'{' => {
                depth += 1;
                if depth == 1 {
                    expecting_entry = true;
                }
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    break;
                }
            }
            b',' if depth == 1 => expecting_entry = true,
            _ => {}
        }
    }
    match lookup {
        FlowLookup::Index(index) => entry_starts.get(index).map(|&start| (start, start)),
        FlowLookup::Key(key) => entry_starts.into_iter().find_map(|start| {
            let key_len = key_written_at(&line[start..], key)?;
            let value = content_start(line, start + key_len + 1).unwrap_or(start);
            Some((start, value))
        }),
    }
}

/// serde reports an unknown field inside a buffered value (the internally tagged `policy`) at
/// the start of the enclosing mapping, not at the field. Finds the field itself among that
/// mapping's lines, the ones from the reported place until indentation drops below it.
pub(super) fn locate_unknown_field(
    text: &str,
    message: &str,
    line: usize,
    column: usize,
) -> Option<(usize, usize)> {
    let field = message.split("unknown field `").nth(1)?.split('`').next()?;
    let first = line.checked_sub(1)?;
    let mapping_indent = column.saturating_sub(1);
    for (i, text_line) in text.lines().enumerate().skip(first) {
        if i > first && is_significant(text_line) && indent_of(text_line) < mapping_indent {
            break;
        }
        let mut from = 0;
        while let Some(offset) = text_line[from..].find(field) {
            let at = from + offset;
            let starts_token = text_line[..at].ends_with([' ', '{', ',']) || at == 0;
            if starts_token && key_written_at(&text_line[at..], field).is_some() {
                return Some((i + 1, text_line[..at].chars().count() + 1));
            }
            from = at + field.len();
        }
    }
    None
}
