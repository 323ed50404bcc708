//! Finds YAML aliases (`*name`) with libyaml itself, the parser serde_yaml runs on, so that
//! what counts as an alias here is exactly what serde_yaml would expand (a few aliases of a
//! large anchored value expand a small file into gigabytes).

use std::mem::MaybeUninit;

/// The 1-based (line, column) of the first alias in `text`, if any. Text that does not parse
/// gives None here: serde_yaml reports the syntax error with its place.
pub(super) fn first_alias(text: &str) -> Option<(usize, usize)> {
    // The parser must not move once initialised: it lives in a box until deleted below.
    let mut parser_box: Box<MaybeUninit<unsafe_libyaml::yaml_parser_t>> =
        Box::new(MaybeUninit::uninit());
    let parser = parser_box.as_mut_ptr();
    // SAFETY: the parser is initialised before any other call and deleted exactly once; the
    // input (`text`) outlives it; every event that parsed is deleted after its type and mark
    // are read, and none is read after a failed parse.
    unsafe {
        if unsafe_libyaml::yaml_parser_initialize(parser).fail {
            return None;
        }
        unsafe_libyaml::yaml_parser_set_encoding(parser, unsafe_libyaml::YAML_UTF8_ENCODING);
        unsafe_libyaml::yaml_parser_set_input_string(parser, text.as_ptr(), text.len() as u64);
        let mut found = None;
        loop {
            let mut event = MaybeUninit::<unsafe_libyaml::yaml_event_t>::uninit();
            let event = event.as_mut_ptr();
            if unsafe_libyaml::yaml_parser_parse(parser, event).fail {
                break;
            }
            let (is_alias, is_end) = match (*event).type_ {
                unsafe_libyaml::YAML_ALIAS_EVENT => (true, false),
                unsafe_libyaml::YAML_STREAM_END_EVENT => (false, true),
                _ => (false, false),
            };
            if is_alias {
                let mark = (*event).start_mark;
                found = Some((mark.line as usize + 1, mark.column as usize + 1));
            }
            unsafe_libyaml::yaml_event_delete(event);
            if is_alias || is_end {
                break;
            }
        }
        unsafe_libyaml::yaml_parser_delete(parser);
        drop(parser_box);
        found
    }
}
