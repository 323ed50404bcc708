//! Tests of the parent module (kept apart so the module itself stays readable).
use std::path::PathBuf;

use super::*;

/// Where the shared fixtures and the test GGUF are (the crate's test helpers can replace this).
fn test_paths() -> (PathBuf, PathBuf) {
    (
        crate::testutil::smollm_fixture(""),
        crate::testutil::embedded_gguf(),
    )
}

#[derive(serde::Deserialize)]
struct FixtureCase {
    text: String,
    ids: Vec<u32>,
    decoded: String,
}

fn fixture_cases() -> Vec<FixtureCase> {
    let path = crate::testutil::smollm_fixture("tokenization.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn gguf_content() -> Content {
    let path = test_paths().1;
    let mut file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Content::read(&mut file).unwrap()
}

fn json_tokenizer() -> TextTokenizer {
    TextTokenizer::from_tokenizer_json(&crate::testutil::smollm_fixture(
        "hf_tokenizer/tokenizer.json",
    ))
    .unwrap()
}

fn assert_reproduces_fixture(tokenizer: &TextTokenizer) {
    let cases = fixture_cases();
    assert!(cases.len() >= 10);
    for case in &cases {
        assert_eq!(
            tokenizer.encode(&case.text).unwrap(),
            case.ids,
            "ids of {:?}",
            case.text
        );
        assert_eq!(
            tokenizer.decode(&case.ids).unwrap(),
            case.decoded,
            "decode of {:?}",
            case.text
        );
    }
}

#[test]
fn gguf_tokenizer_reproduces_every_fixture_entry() {
    assert_reproduces_fixture(&TextTokenizer::from_gguf(&gguf_content()).unwrap());
}

#[test]
fn tokenizer_json_reproduces_every_fixture_entry() {
    assert_reproduces_fixture(&json_tokenizer());
}

#[test]
fn gguf_and_json_agree_on_tricky_text_ids_and_identity() {
    let gguf = TextTokenizer::from_gguf(&gguf_content()).unwrap();
    let json = json_tokenizer();
    // Whitespace before digits is where llama.cpp's smollm split would differ.
    let texts = [
        "a  1",
        "x\t\t42 \n\n 7",
        "  2024  ",
        "it's  'quoted'  ½ ² ٣ 一二三",
        "<|im_start|>user\n  9<|im_end|><|endoftext|>",
        "\r\n\r\n   \u{a0}\u{3000}tail",
    ];
    for text in texts {
        assert_eq!(
            gguf.encode(text).unwrap(),
            json.encode(text).unwrap(),
            "ids of {text:?}"
        );
    }
    // Hugging Face's split ("a", " ", " 1"), not llama.cpp's digits-first one ("a", "  ", "1").
    assert_eq!(gguf.encode("a  1").unwrap(), vec![81, 216, 216, 33]);
    assert_eq!(gguf.identity(), json.identity());
    assert_eq!(gguf.identity().len(), 64);
    assert_eq!(gguf.vocab_size(), 49152);
    assert_eq!(json.vocab_size(), 49152);
}

#[test]
fn special_ids_and_end_of_turn_tokens() {
    for tokenizer in [
        TextTokenizer::from_gguf(&gguf_content()).unwrap(),
        json_tokenizer(),
    ] {
        assert_eq!(tokenizer.bos_id(), Some(1));
        assert_eq!(tokenizer.eos_id(), Some(2));
        assert_eq!(tokenizer.eos_ids(), vec![2, 0]);
        assert_eq!(tokenizer.token_str(1).as_deref(), Some("<|im_start|>"));
        assert_eq!(tokenizer.token_str(7042).as_deref(), Some("ĠParis"));
        assert_eq!(tokenizer.token_text(7042).unwrap(), " Paris");
        // SmolLM2 declares add_bos_token false: nothing is prepended.
        assert_eq!(tokenizer.encode("a").unwrap(), vec![81]);
    }
}

#[test]
fn unknown_pre_tokenizer_and_model_are_refused() {
    let mut content = gguf_content();
    content.metadata.insert(
        "tokenizer.ggml.pre".into(),
        Value::String("llama-bpe".into()),
    );
    let err = TextTokenizer::from_gguf(&content).unwrap_err().to_string();
    assert!(err.contains("\"llama-bpe\""), "{err}");

    content.metadata.remove("tokenizer.ggml.pre");
    let err = format!("{:#}", TextTokenizer::from_gguf(&content).unwrap_err());
    assert!(err.contains("tokenizer.ggml.pre"), "{err}");

    content
        .metadata
        .insert("tokenizer.ggml.model".into(), Value::String("llama".into()));
    let err = TextTokenizer::from_gguf(&content).unwrap_err().to_string();
    assert!(err.contains("\"llama\""), "{err}");
}

#[test]
fn declared_add_bos_token_is_prepended() {
    let mut content = gguf_content();
    content
        .metadata
        .insert("tokenizer.ggml.add_bos_token".into(), Value::Bool(true));
    let tokenizer = TextTokenizer::from_gguf(&content).unwrap();
    assert_eq!(tokenizer.encode("a").unwrap(), vec![1, 81]);
    // A rendered chat prompt gets exactly one BOS, whether or not the template wrote it.
    assert_eq!(tokenizer.encode_rendered("a").unwrap(), vec![1, 81]);
    assert_eq!(
        tokenizer.encode_rendered("<|im_start|>a").unwrap(),
        vec![1, 81]
    );
    // Without add_bos_token, nothing is added.
    let plain = TextTokenizer::from_gguf(&gguf_content()).unwrap();
    assert_eq!(plain.encode_rendered("a").unwrap(), vec![81]);
}

#[test]
fn tokenizer_and_stream_can_move_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<TextTokenizer>();
    assert_send_sync::<TokenStream>();
}

#[test]
fn token_stream_reassembles_multibyte_text() {
    let tokenizer = json_tokenizer();
    let case = fixture_cases()
        .into_iter()
        .find(|c| c.text.contains('🚀'))
        .expect("a fixture entry with emoji and CJK");
    let mut stream = tokenizer.token_stream();
    let mut pieces = Vec::new();
    for &id in &case.ids {
        if let Some(piece) = stream.next_token(id).unwrap() {
            pieces.push(piece);
        }
    }
    pieces.extend(stream.finish().unwrap());
    assert!(
        pieces
            .iter()
            .all(|p| !p.contains(char::REPLACEMENT_CHARACTER)),
        "{pieces:?}"
    );
    // Some tokens hold only part of a character, so fewer pieces than ids come out.
    assert!(pieces.len() < case.ids.len());
    assert_eq!(pieces.concat(), case.text);
    assert_eq!(pieces.concat(), tokenizer.decode(&case.ids).unwrap());
}

#[test]
fn displayed_text_leaves_out_the_end_of_turn_marker() {
    for tokenizer in [
        TextTokenizer::from_gguf(&gguf_content()).unwrap(),
        json_tokenizer(),
    ] {
        let end = tokenizer
            .inner()
            .token_to_id("<|im_end|>")
            .expect("SmolLM2's end of turn");
        let mut ids = tokenizer.encode("3. Green").unwrap();
        ids.push(end);
        let mut stream = tokenizer.token_stream();
        let mut shown = String::new();
        for &id in &ids {
            shown.extend(stream.next_token(id).unwrap());
        }
        shown.extend(stream.finish().unwrap());
        assert_eq!(shown, "3. Green");
        assert_eq!(tokenizer.decode_for_display(&ids).unwrap(), "3. Green");
        // The exact decode keeps it: a rendered prompt must decode back to itself.
        assert_eq!(tokenizer.decode(&ids).unwrap(), "3. Green<|im_end|>");
    }
}

#[test]
fn token_stream_finish_flushes_an_incomplete_character() {
    let tokenizer = json_tokenizer();
    let ids = tokenizer.encode("ok 🚀").unwrap();
    let mut stream = tokenizer.token_stream();
    let mut text = String::new();
    for &id in &ids[..ids.len() - 1] {
        text.extend(stream.next_token(id).unwrap());
    }
    assert_eq!(text.trim_end(), "ok");
    let rest = stream
        .finish()
        .unwrap()
        .expect("held-back bytes are flushed");
    assert!(rest.ends_with(char::REPLACEMENT_CHARACTER), "{rest:?}");
    assert_eq!(stream.finish().unwrap(), None);
}
