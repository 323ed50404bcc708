//! Requests: what a requester asked a provider for (model, prompt, sampling, seed, limits and
//! a random nonce), written by `verillm-tui request`, served by `infer --request` and held
//! against a bundle by `verify --request` (docs/request.md). A request file is untrusted input:
//! bounded in size, every field checked, its sha256 over documented canonical bytes verified.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine::sampling::SamplingParams;
use crate::model::chat::render_prompt;
use crate::model::LoadedModel;
use crate::util::{hex, read_untrusted_file, write_file_atomic};

pub const REQUEST_FORMAT_VERSION: u32 = 1;
/// A request holds a prompt, not a corpus.
pub const MAX_REQUEST_BYTES: u64 = 4 << 20;
const MAX_MESSAGES: usize = 256;
const MAX_MODEL_ID_BYTES: usize = 1024;
/// First line of the canonical bytes.
const CANONICAL_HEADER: &str = "verillm-request/1";
const ROLES: [&str; 3] = ["system", "user", "assistant"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestModel {
    /// The model id the requester named (a registry id, path or hf:org/name).
    pub id: String,
    /// sha256 of the weights (`LoadedModel::weights_sha256`): what binds the request to one
    /// model, whatever it is called.
    pub weights_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestMessage {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestPrompt {
    pub messages: Vec<RequestMessage>,
    /// Rendered with the model's chat template (true), or the contents joined by newlines and
    /// tokenized as plain text (false, `--raw`).
    pub chat_template: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub format_version: u32,
    pub model: RequestModel,
    pub prompt: RequestPrompt,
    pub sampling: SamplingParams,
    /// 32 random bytes, hex: makes every request distinct, so an answer cannot be replayed.
    pub nonce: String,
    /// sha256 of the canonical bytes (docs/request.md); written with the file, checked on read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// 32 bytes from the operating system's generator, hex.
pub fn new_nonce() -> String {
    use rand::TryRngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the operating system's random generator failed");
    hex(&bytes)
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Request {
    /// A new request with a fresh nonce.
    pub fn new(
        model: &LoadedModel,
        messages: &[(String, String)],
        chat_template: bool,
        sampling: SamplingParams,
    ) -> Request {
        let mut request = Request {
            format_version: REQUEST_FORMAT_VERSION,
            model: RequestModel {
                id: model.name.clone(),
                weights_sha256: model.weights_sha256.clone(),
            },
            prompt: RequestPrompt {
                messages: messages
                    .iter()
                    .map(|(role, content)| RequestMessage {
                        role: role.clone(),
                        content: content.clone(),
                    })
                    .collect(),
                chat_template,
            },
            sampling,
            nonce: new_nonce(),
            sha256: None,
        };
        request.sha256 = Some(request.digest());
        request
    }

    /// The bytes the request's sha256 is taken over (docs/request.md): one line per field in a
    /// fixed order, strings length-prefixed, floats as their IEEE-754 bits, so that any language
    /// reproduces them exactly.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut line = |key: &str, value: &[u8]| {
            out.extend_from_slice(key.as_bytes());
            out.push(b' ');
            out.extend_from_slice(value);
            out.push(b'\n');
        };
        let text = |s: &str| {
            let mut v = format!("{}:", s.len()).into_bytes();
            v.extend_from_slice(s.as_bytes());
            v
        };
        let float = |x: f64| format!("{:016x}", x.to_bits()).into_bytes();
        let int = |n: u64| n.to_string().into_bytes();
        line(CANONICAL_HEADER, b"");
        line("model.id", &text(&self.model.id));
        line("model.weights_sha256", &text(&self.model.weights_sha256));
        line(
            "prompt.chat_template",
            if self.prompt.chat_template {
                b"1"
            } else {
                b"0"
            },
        );
        line("prompt.messages", &int(self.prompt.messages.len() as u64));
        for m in &self.prompt.messages {
            line("prompt.message.role", &text(&m.role));
            line("prompt.message.content", &text(&m.content));
        }
        let s = &self.sampling;
        line("sampling.temperature", &float(s.temperature));
        line("sampling.top_p", &float(s.top_p));
        line("sampling.top_k", &int(s.top_k as u64));
        line("sampling.repetition_penalty", &float(s.repetition_penalty));
        line("sampling.seed", &int(s.seed));
        line("sampling.min_new_tokens", &int(s.min_new_tokens as u64));
        line("sampling.max_new_tokens", &int(s.max_new_tokens as u64));
        line("nonce", &text(&self.nonce));
        out
    }

    /// sha256 of the canonical bytes, hex.
    pub fn digest(&self) -> String {
        hex(&Sha256::digest(self.canonical_bytes()))
    }

    /// Every field within bounds and well formed; `sha256`, when present, the digest.
    pub fn validate(&self) -> Result<(), String> {
        if self.format_version != REQUEST_FORMAT_VERSION {
            return Err(format!(
                "format_version {} is not supported (expected {REQUEST_FORMAT_VERSION})",
                self.format_version
            ));
        }
        if self.model.id.is_empty() || self.model.id.len() > MAX_MODEL_ID_BYTES {
            return Err(format!(
                "model.id must be 1..={MAX_MODEL_ID_BYTES} bytes, not {}",
                self.model.id.len()
            ));
        }
        if !is_hex64(&self.model.weights_sha256) {
            return Err(format!(
                "model.weights_sha256 `{}` is not 64 lowercase hex digits",
                self.model.weights_sha256
            ));
        }
        let messages = &self.prompt.messages;
        if messages.is_empty() || messages.len() > MAX_MESSAGES {
            return Err(format!(
                "prompt.messages holds {} messages; expected 1..={MAX_MESSAGES}",
                messages.len()
            ));
        }
        for (i, m) in messages.iter().enumerate() {
            if !ROLES.contains(&m.role.as_str()) {
                return Err(format!(
                    "prompt.messages[{i}].role `{}` is not one of {}",
                    m.role,
                    ROLES.join(", ")
                ));
            }
        }
        self.sampling
            .validate()
            .map_err(|e| format!("sampling: {e}"))?;
        if !is_hex64(&self.nonce) {
            return Err(format!(
                "nonce `{}` is not 64 lowercase hex digits",
                self.nonce
            ));
        }
        if let Some(claimed) = &self.sha256 {
            let digest = self.digest();
            if *claimed != digest {
                return Err(format!(
                    "sha256 {claimed} is not the sha256 of the request's canonical bytes \
                     ({digest}): a field was changed after it was written"
                ));
            }
        }
        Ok(())
    }

    /// Renders and tokenizes the prompt with `model`'s own tokenizer (and chat template).
    pub fn render(&self, model: &LoadedModel) -> Result<(String, Vec<u32>)> {
        let messages: Vec<(String, String)> = self
            .prompt
            .messages
            .iter()
            .map(|m| (m.role.clone(), m.content.clone()))
            .collect();
        if self.prompt.chat_template {
            render_prompt(model, &messages)
        } else {
            let text = messages
                .iter()
                .map(|(_, c)| c.as_str())
                .collect::<Vec<_>>()
                .join("\n");
            let ids = model.tokenizer.encode(&text)?;
            Ok((text, ids))
        }
    }

    /// The prompt as one line for messages: the last message's text, shortened.
    pub fn prompt_summary(&self) -> String {
        let text = self
            .prompt
            .messages
            .last()
            .map_or("", |m| m.content.as_str());
        let short: String = text.chars().take(60).collect();
        if short.len() < text.len() {
            format!("{short}…")
        } else {
            short
        }
    }
}

/// Reads and checks a request file.
pub fn read_request(path: &Path) -> Result<Request> {
    let bytes = read_untrusted_file(path, MAX_REQUEST_BYTES)
        .with_context(|| format!("reading request {}", path.display()))?;
    let request: Request = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not a valid request", path.display()))?;
    if let Err(e) = request.validate() {
        bail!("{}: {e}", path.display());
    }
    Ok(request)
}

/// Writes `request` (with its sha256) to `path`.
pub fn write_request(path: &Path, request: &Request) -> Result<()> {
    let mut request = request.clone();
    request.sha256 = Some(request.digest());
    write_file_atomic(path, &serde_json::to_vec_pretty(&request)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The canonical bytes and sha256 of docs/request.md's test vector.
    pub(crate) fn vector() -> Request {
        Request {
            format_version: 1,
            model: RequestModel {
                id: "smollm2-135m".into(),
                weights_sha256: "ab".repeat(32),
            },
            prompt: RequestPrompt {
                messages: vec![RequestMessage {
                    role: "user".into(),
                    content: "Why is the sky blue?".into(),
                }],
                chat_template: true,
            },
            sampling: SamplingParams {
                temperature: 0.7,
                top_p: 0.9,
                top_k: 0,
                repetition_penalty: 1.1,
                seed: 42,
                min_new_tokens: 0,
                max_new_tokens: 128,
            },
            nonce: "0f".repeat(32),
            sha256: None,
        }
    }

    #[test]
    fn canonical_bytes_and_sha256_match_the_documented_vector() {
        let r = vector();
        let expected = format!(
            "verillm-request/1 \nmodel.id 12:smollm2-135m\nmodel.weights_sha256 64:{}\n\
             prompt.chat_template 1\nprompt.messages 1\nprompt.message.role 4:user\n\
             prompt.message.content 20:Why is the sky blue?\n\
             sampling.temperature 3fe6666666666666\nsampling.top_p 3feccccccccccccd\n\
             sampling.top_k 0\nsampling.repetition_penalty 3ff199999999999a\n\
             sampling.seed 42\nsampling.min_new_tokens 0\nsampling.max_new_tokens 128\n\
             nonce 64:{}\n",
            "ab".repeat(32),
            "0f".repeat(32)
        );
        assert_eq!(String::from_utf8(r.canonical_bytes()).unwrap(), expected);
        assert_eq!(r.digest(), REQUEST_VECTOR_SHA256);
    }

    pub(crate) const REQUEST_VECTOR_SHA256: &str =
        "d4ce63da02198d7138c335d326b9de91e30ccc937c3e4c0b67db52331610cc78";

    #[test]
    fn a_changed_field_breaks_the_checksum_and_bad_fields_are_named() {
        let mut r = vector();
        r.sha256 = Some(r.digest());
        assert!(r.validate().is_ok());
        let mut changed = r.clone();
        changed.sampling.seed = 43;
        assert!(changed.validate().unwrap_err().contains("sha256"));
        let mut bad = vector();
        bad.nonce = "xyz".into();
        assert!(bad.validate().unwrap_err().contains("nonce"));
        let mut bad = vector();
        bad.prompt.messages[0].role = "root".into();
        assert!(bad
            .validate()
            .unwrap_err()
            .contains("prompt.messages[0].role"));
        let mut bad = vector();
        bad.sampling.top_p = 2.0;
        assert!(bad.validate().unwrap_err().contains("sampling"));
        let mut bad = vector();
        bad.prompt.messages.clear();
        assert!(bad.validate().unwrap_err().contains("prompt.messages"));
    }

    #[test]
    fn nonces_are_fresh_hex() {
        let (a, b) = (new_nonce(), new_nonce());
        assert!(is_hex64(&a) && is_hex64(&b));
        assert_ne!(a, b);
    }

    #[test]
    fn oversized_or_malformed_request_files_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("req.json");
        std::fs::write(&path, vec![b' '; (MAX_REQUEST_BYTES + 1) as usize]).unwrap();
        assert!(read_request(&path).is_err());
        std::fs::write(&path, b"{\"format_version\": 1}").unwrap();
        let e = format!("{:#}", read_request(&path).unwrap_err());
        assert!(
            e.contains("req.json") && e.contains("not a valid request"),
            "{e}"
        );
        write_request(&path, &vector()).unwrap();
        let back = read_request(&path).unwrap();
        assert_eq!(back.sha256.as_deref(), Some(vector().digest().as_str()));
    }
}
