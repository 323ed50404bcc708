//! Screens a configuration file with libyaml's own scanner, the one serde_yaml runs on, so
//! that what it finds is exactly what serde_yaml would see: aliases (`*name`: a few aliases of
//! a large anchored value expand a small file into gigabytes) and flow collections nested
//! deeply (libyaml's time grows with tokens × flow depth: 80,000 levels took 11 s, before
//! serde_yaml's own recursion limit applies). The scan stops at the first finding, so it
//! costs little itself.

use std::mem::MaybeUninit;

/// Flow collections (`[`, `{`) may nest this deep; no configuration needs more than a few.
pub(super) const MAX_FLOW_DEPTH: usize = 64;

/// What the scan found, at a 1-based (line, column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Finding {
    Alias(usize, usize),
    DeepFlow(usize, usize),
}

/// The first alias, or flow collection nested deeper than [`MAX_FLOW_DEPTH`], in `text`.
/// Text the scanner cannot read gives None here: serde_yaml reports the syntax error with its
/// place.
pub(super) fn screen(text: &str) -> Option<Finding> {
    // The parser must not move once initialised: it lives in a box until deleted below.
    let mut parser_box: Box<MaybeUninit<unsafe_libyaml::yaml_parser_t>> =
        Box::new(MaybeUninit::uninit());
    let parser = parser_box.as_mut_ptr();
    // SAFETY: the parser is initialised before any other call and deleted exactly once; the
    // input (`text`) outlives it; every token that scanned is deleted after its type and mark
    // are read, and none is read after a failed scan.
    unsafe {
        if unsafe_libyaml::yaml_parser_initialize(parser).fail {
            return None;
        }
        unsafe_libyaml::yaml_parser_set_encoding(parser, unsafe_libyaml::YAML_UTF8_ENCODING);
        unsafe_libyaml::yaml_parser_set_input_string(parser, text.as_ptr(), text.len() as u64);
        let mut depth = 0usize;
        let mut found = None;
        loop {
            let mut token = MaybeUninit::<unsafe_libyaml::yaml_token_t>::uninit();
            let token = token.as_mut_ptr();
            if unsafe_libyaml::yaml_parser_scan(parser, token).fail {
                break;
            }
            let mark = (*token).start_mark;
            let at = (mark.line as usize + 1, mark.column as usize + 1);
            let mut end = false;
            match (*token).type_ {
                unsafe_libyaml::YAML_ALIAS_TOKEN => found = Some(Finding::Alias(at.0, at.1)),
                unsafe_libyaml::YAML_FLOW_SEQUENCE_START_TOKEN
                | unsafe_libyaml::YAML_FLOW_MAPPING_START_TOKEN => {
                    depth += 1;
                    if depth > MAX_FLOW_DEPTH {
                        found = Some(Finding::DeepFlow(at.0, at.1));
                    }
                }
                unsafe_libyaml::YAML_FLOW_SEQUENCE_END_TOKEN
                | unsafe_libyaml::YAML_FLOW_MAPPING_END_TOKEN => depth = depth.saturating_sub(1),
                unsafe_libyaml::YAML_STREAM_END_TOKEN => end = true,
                _ => {}
            }
            unsafe_libyaml::yaml_token_delete(token);
            if found.is_some() || end {
                break;
            }
        }
        unsafe_libyaml::yaml_parser_delete(parser);
        drop(parser_box);
        found
    }
}
