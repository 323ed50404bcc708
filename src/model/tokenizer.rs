//! Text <-> token ids, built either from a Hugging Face `tokenizer.json` or from the vocabulary
//! embedded in a GGUF file, plus incremental detokenization for streaming output.
//!
//! The GGUF path rebuilds the tokenizer the model was trained with from `tokenizer.ggml.*`
//! metadata. It only accepts pre-tokenizers it reproduces exactly and refuses the rest: a
//! tokenizer that silently splits text differently feeds the model ids it never saw.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use sha2::{Digest, Sha256};
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

/// Tokens that end an assistant turn in common chat formats; whichever exist in a vocabulary
/// stop generation alongside the declared eos token.
const END_OF_TURN_TOKENS: [&str; 5] = [
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|eom_id|>",
];

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
const GGUF_TOKEN_TYPE_CONTROL: i32 = 3;
const GGUF_TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// `tokenizer.ggml.pre` values whose splitting this module reproduces exactly.
///
/// * `smollm` (SmolLM/SmolLM2): the Hugging Face `tokenizer.json` of these models is a plain
///   GPT-2 byte-level BPE: no normalizer, `ByteLevel(add_prefix_space=false, trim_offsets=true,
///   use_regex=true)` pre-tokenizer, `ByteLevel` decoder, and a post-processor that adds nothing.
///   llama.cpp instead splits every `\p{N}` off first and then applies the GPT-2 regex; the two
///   differ only where whitespace runs into a digit (`"a  1"`), and the model was trained with
///   the Hugging Face one, so that is what is built here.
/// * `gpt-2`: the same byte-level pre-tokenizer, which is also exactly llama.cpp's `gpt-2` regex.
const SUPPORTED_GGUF_PRE_TOKENIZERS: [&str; 2] = ["smollm", "gpt-2"];

/// A tokenizer plus the facts the engine needs around it: which ids to prepend, which ids end a
/// generation, and a fingerprint so a verifier can check it tokenizes like the inferencer.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Arc<Tokenizer>,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    /// Further ids that end a turn, from generation_config.json (Llama 3 lists several).
    extra_eos_ids: Vec<u32>,
    /// Prepended by `encode` when the model declares it (GGUF `tokenizer.ggml.add_bos_token`).
    prepend_id: Option<u32>,
    /// Appended by `encode` when the model declares it (GGUF `tokenizer.ggml.add_eos_token`).
    append_id: Option<u32>,
    identity: String,
}

impl fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("identity", &self.identity)
            .finish()
    }
}

impl TextTokenizer {
    /// Loads a Hugging Face `tokenizer.json`. The bos/eos tokens come from a sibling
    /// `tokenizer_config.json` (and `generation_config.json` for extra eos ids) when present,
    /// since `tokenizer.json` itself does not say which tokens play those roles.
    pub fn from_tokenizer_json(path: &Path) -> Result<Self> {
        let json_text = crate::util::read_text(path, crate::util::MAX_TOKENIZER_BYTES)?;
        let inner = Tokenizer::from_bytes(json_text.as_bytes())
            .map_err(|e| anyhow!("parsing {} as a tokenizer: {e}", path.display()))?;
        let json: serde_json::Value = serde_json::from_str(&json_text)
            .with_context(|| format!("parsing {} as JSON", path.display()))?;
        let merges = merges_from_tokenizer_json(&json)
            .with_context(|| format!("{}: model.merges", path.display()))?;

        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        let config = read_optional_json(&dir.join("tokenizer_config.json"))?;
        let token_id = |key: &str| -> Option<u32> {
            let name = config
                .as_ref()
                .and_then(|c| special_token_name(c.get(key)?))?;
            inner.token_to_id(&name)
        };
        let bos_id = token_id("bos_token");
        let generation_eos = match read_optional_json(&dir.join("generation_config.json"))? {
            Some(generation) => generation_eos_ids(&generation),
            None => vec![],
        };
        let eos_id = token_id("eos_token").or_else(|| generation_eos.first().copied());

        let tokens = tokens_by_id(&inner);
        let identity = tokenizer_identity(&tokens, &merges);
        Ok(Self {
            inner: Arc::new(inner),
            bos_id,
            eos_id,
            extra_eos_ids: generation_eos,
            prepend_id: None,
            append_id: None,
            identity,
        })
    }

    /// Builds the byte-level BPE tokenizer described by a GGUF file's `tokenizer.ggml.*`
    /// metadata. Control and user-defined tokens become added tokens so that chat markers such
    /// as `<|im_start|>` written in the prompt text map to their single ids.
    pub fn from_gguf(content: &Content) -> Result<Self> {
        let model_kind = gguf_string(content, "tokenizer.ggml.model")?;
        if model_kind != "gpt2" {
            bail!("GGUF tokenizer.ggml.model is {model_kind:?}; only \"gpt2\" (byte-level BPE) is supported");
        }
        let pre = gguf_string(content, "tokenizer.ggml.pre").context(
            "the GGUF does not name its pre-tokenizer (tokenizer.ggml.pre), so its text splitting cannot be reproduced",
        )?;
        if !SUPPORTED_GGUF_PRE_TOKENIZERS.contains(&pre.as_str()) {
            bail!(
                "GGUF tokenizer.ggml.pre is {pre:?}, a pre-tokenizer this build does not reproduce exactly \
                 (supported: {SUPPORTED_GGUF_PRE_TOKENIZERS:?})"
            );
        }
        if gguf_bool(content, "tokenizer.ggml.add_space_prefix")?.unwrap_or(false) {
            // Hugging Face byte-level tokenizers would prepend a space while llama.cpp ignores
            // the flag for BPE; with no way to tell which the model expects, refuse.
            bail!("GGUF tokenizer.ggml.add_space_prefix is true for a \"gpt2\" tokenizer ({pre:?}); not supported");
        }

        let tokens: Vec<String> = gguf_array(content, "tokenizer.ggml.tokens")?
            .iter()
            .enumerate()
            .map(|(id, v)| {
                v.to_string()
                    .cloned()
                    .map_err(|e| anyhow!("tokenizer.ggml.tokens[{id}]: {e}"))
            })
            .collect::<Result<_>>()?;
        let mut vocab = Vocab::default();
        for (id, token) in tokens.iter().enumerate() {
            if let Some(previous) = vocab.insert(token.clone(), id as u32) {
                bail!("GGUF tokenizer.ggml.tokens has {token:?} twice (ids {previous} and {id})");
            }
        }
        let merges: Vec<(String, String)> = gguf_array(content, "tokenizer.ggml.merges")?
            .iter()
            .enumerate()
            .map(|(rank, v)| {
                let merge = v
                    .to_string()
                    .map_err(|e| anyhow!("tokenizer.ggml.merges[{rank}]: {e}"))?;
                let (left, right) = merge.split_once(' ').ok_or_else(|| {
                    anyhow!("tokenizer.ggml.merges[{rank}] = {merge:?} is not two tokens")
                })?;
                Ok((left.to_string(), right.to_string()))
            })
            .collect::<Result<_>>()?;
        let token_types: Vec<i32> = match content.metadata.get("tokenizer.ggml.token_type") {
            None => vec![],
            Some(value) => value
                .to_vec()
                .map_err(|e| anyhow!("tokenizer.ggml.token_type: {e}"))?
                .iter()
                .enumerate()
                .map(|(id, v)| {
                    v.to_i32()
                        .map_err(|e| anyhow!("tokenizer.ggml.token_type[{id}]: {e}"))
                })
                .collect::<Result<_>>()?,
        };
        if !token_types.is_empty() && token_types.len() != tokens.len() {
            bail!(
                "GGUF tokenizer.ggml.token_type has {} entries for {} tokens",
                token_types.len(),
                tokens.len()
            );
        }

        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges.clone())
            .build()
            .map_err(|e| anyhow!("building the BPE model from GGUF tokens and merges: {e}"))?;
        let mut inner = Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        inner.with_decoder(Some(ByteLevel::new(false, true, true)));
        let added: Vec<AddedToken> = token_types
            .iter()
            .zip(&tokens)
            .filter_map(|(&kind, token)| match kind {
                GGUF_TOKEN_TYPE_CONTROL => Some(AddedToken::from(token.clone(), true)),
                // llama.cpp always matches and prints user-defined tokens, like HF non-special ones.
                GGUF_TOKEN_TYPE_USER_DEFINED => Some(AddedToken::from(token.clone(), false)),
                _ => None,
            })
            .collect();
        inner
            .add_tokens(added)
            .map_err(|e| anyhow!("registering GGUF control tokens: {e}"))?;

        let vocab_size = tokens.len() as u32;
        let token_id_at = |key: &str| -> Result<Option<u32>> {
            match content.metadata.get(key) {
                None => Ok(None),
                Some(v) => {
                    let id = v.to_u32().map_err(|e| anyhow!("GGUF {key}: {e}"))?;
                    if id >= vocab_size {
                        bail!("GGUF {key} = {id} is outside the {vocab_size}-token vocabulary");
                    }
                    Ok(Some(id))
                }
            }
        };
        let bos_id = token_id_at("tokenizer.ggml.bos_token_id")?;
        let eos_id = token_id_at("tokenizer.ggml.eos_token_id")?;
        let required = |flag: &str, id: Option<u32>, role: &str| -> Result<Option<u32>> {
            match gguf_bool(content, flag)? {
                Some(true) => id
                    .map(Some)
                    .ok_or_else(|| anyhow!("GGUF {flag} is true but no {role} token id is given")),
                _ => Ok(None),
            }
        };
        let prepend_id = required("tokenizer.ggml.add_bos_token", bos_id, "bos")?;
        let append_id = required("tokenizer.ggml.add_eos_token", eos_id, "eos")?;

        let identity = tokenizer_identity(&tokens, &merges);
        Ok(Self {
            inner: Arc::new(inner),
            bos_id,
            eos_id,
            extra_eos_ids: vec![],
            prepend_id,
            append_id,
            identity,
        })
    }

    /// Token ids for `text`, with special tokens written in the text recognised and bos/eos
    /// added only where the model declares it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, true)
            .map_err(|e| anyhow!("tokenizing {} bytes of text: {e}", text.len()))?;
        let mut ids = Vec::with_capacity(encoding.len() + 2);
        ids.extend(self.prepend_id);
        ids.extend_from_slice(encoding.get_ids());
        ids.extend(self.append_id);
        Ok(ids)
    }

    /// Token ids for a prompt a chat template rendered. The template writes special tokens
    /// itself (e.g. `{{ bos_token }}`), so the tokenizer's post-processor adds nothing, as in
    /// transformers' `apply_chat_template`; a model that declares BOS (GGUF
    /// `add_bos_token`) gets exactly one, whether or not the template wrote it (as llama.cpp).
    pub fn encode_rendered(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| anyhow!("tokenizing {} bytes of text: {e}", text.len()))?;
        let mut ids = encoding.get_ids().to_vec();
        if let Some(bos) = self.prepend_id {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    /// Text for `ids`, special tokens included (so a rendered prompt decodes back to itself).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| anyhow!("decoding {} token ids: {e}", ids.len()))
    }

    /// Text for a person to read: control tokens such as `<|im_end|>` left out, as
    /// transformers' `skip_special_tokens=True` does. The ids stay what is verified.
    pub fn decode_for_display(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| anyhow!("decoding {} token ids: {e}", ids.len()))
    }

    /// Ids that end a generation: the declared eos ids plus any end-of-turn token in the
    /// vocabulary, declared eos first.
    pub fn eos_ids(&self) -> Vec<u32> {
        let declared = self
            .eos_id
            .into_iter()
            .chain(self.extra_eos_ids.iter().copied());
        let named = END_OF_TURN_TOKENS
            .iter()
            .filter_map(|name| self.inner.token_to_id(name));
        let mut ids: Vec<u32> = Vec::new();
        for id in declared.chain(named) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// Number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// sha256 (hex) over the id-ordered vocabulary and the ranked merges. Equal for the GGUF and
    /// `tokenizer.json` forms of one tokenizer, so bundles can name it independently of the file.
    pub fn identity(&self) -> String {
        self.identity.clone()
    }

    /// The vocabulary entry for `id` as stored (byte-level form, e.g. `Ġthe`).
    pub fn token_str(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The text `id` decodes to on its own; a token holding part of a UTF-8 character shows as
    /// U+FFFD. Use [`TokenStream`] to assemble running text.
    pub fn token_text(&self, id: u32) -> Result<String> {
        self.decode(&[id])
    }

    /// A fresh incremental detokenizer sharing this tokenizer.
    pub fn token_stream(&self) -> TokenStream {
        TokenStream::new(self.clone())
    }

    /// The underlying `tokenizers` tokenizer, for anything not wrapped here.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}

/// Turns generated ids into text for display as they arrive (control tokens left out, as in
/// [`TextTokenizer::decode_for_display`]). One token can hold part of a multi-byte character
/// (emoji, CJK), so text is released only once it decodes to whole characters, and the last
/// released tokens are kept as context because some decoders read across tokens.
pub struct TokenStream {
    tokenizer: TextTokenizer,
    /// Ids of the last released chunk (context), followed by ids not yet released.
    ids: Vec<u32>,
    /// How many leading entries of `ids` are context.
    context_len: usize,
    /// What the context ids decode to on their own.
    context_text: String,
}

impl TokenStream {
    pub fn new(tokenizer: TextTokenizer) -> Self {
        Self {
            tokenizer,
            ids: Vec::new(),
            context_len: 0,
            context_text: String::new(),
        }
    }

    /// Feeds one id; returns the text it completes, if any.
    pub fn next_token(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let text = self.tokenizer.decode_for_display(&self.ids)?;
        if text.ends_with(char::REPLACEMENT_CHARACTER) {
            return Ok(None);
        }
        self.release(text)
    }

    /// Releases whatever is still held back (an incomplete character shows as U+FFFD) and
    /// resets the stream.
    pub fn finish(&mut self) -> Result<Option<String>> {
        let released = if self.ids.len() > self.context_len {
            let text = self.tokenizer.decode_for_display(&self.ids)?;
            self.release(text)?
        } else {
            None
        };
        self.ids.clear();
        self.context_len = 0;
        self.context_text.clear();
        Ok(released)
    }

    fn release(&mut self, text: String) -> Result<Option<String>> {
        let new_text = match text.strip_prefix(self.context_text.as_str()) {
            Some(rest) => rest.to_string(),
            // The context decoded differently once followed by more ids: release the new ids alone.
            None => self
                .tokenizer
                .decode_for_display(&self.ids[self.context_len..])?,
        };
        if new_text.is_empty() {
            return Ok(None);
        }
        self.ids.drain(..self.context_len);
        self.context_len = self.ids.len();
        self.context_text = self.tokenizer.decode_for_display(&self.ids)?;
        Ok(Some(new_text))
    }
}

/// sha256 hex over `tokens` (indexed by id) and `merges` (in rank order), each string length-
/// prefixed so no two different inputs hash the same bytes.
fn tokenizer_identity(tokens: &[String], merges: &[(String, String)]) -> String {
    fn put(hasher: &mut Sha256, s: &str) {
        hasher.update((s.len() as u64).to_le_bytes());
        hasher.update(s.as_bytes());
    }
    let mut hasher = Sha256::new();
    hasher.update(b"verillm-tokenizer-identity-v1");
    hasher.update((tokens.len() as u64).to_le_bytes());
    for token in tokens {
        put(&mut hasher, token);
    }
    hasher.update((merges.len() as u64).to_le_bytes());
    for (left, right) in merges {
        put(&mut hasher, left);
        put(&mut hasher, right);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The vocabulary (added tokens included) as a list indexed by id; unused ids stay empty.
fn tokens_by_id(tokenizer: &Tokenizer) -> Vec<String> {
    let by_id: BTreeMap<u32, String> = tokenizer
        .get_vocab(true)
        .into_iter()
        .map(|(token, id)| (id, token))
        .collect();
    let len = by_id.keys().next_back().map_or(0, |&max| max as usize + 1);
    let mut tokens = vec![String::new(); len];
    for (id, token) in by_id {
        tokens[id as usize] = token;
    }
    tokens
}

/// `model.merges` of a tokenizer.json in rank order; both the `"a b"` and `["a", "b"]` forms
/// occur in the wild. Non-BPE models have none.
fn merges_from_tokenizer_json(json: &serde_json::Value) -> Result<Vec<(String, String)>> {
    let Some(merges) = json.pointer("/model/merges") else {
        return Ok(vec![]);
    };
    let merges = merges.as_array().ok_or_else(|| anyhow!("not an array"))?;
    merges
        .iter()
        .enumerate()
        .map(|(rank, merge)| {
            let pair = match merge {
                serde_json::Value::String(s) => s
                    .split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string())),
                serde_json::Value::Array(parts) => match parts.as_slice() {
                    [serde_json::Value::String(a), serde_json::Value::String(b)] => {
                        Some((a.clone(), b.clone()))
                    }
                    _ => None,
                },
                _ => None,
            };
            pair.ok_or_else(|| anyhow!("merge {rank} = {merge} is not a pair of tokens"))
        })
        .collect()
}

fn read_optional_json(path: &Path) -> Result<Option<serde_json::Value>> {
    match crate::util::read_optional_text(path, crate::util::MAX_MODEL_TEXT_BYTES)? {
        Some(text) => {
            let value = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", path.display()))?;
            Ok(Some(value))
        }
        None => Ok(None),
    }
}

/// A special-token entry of tokenizer_config.json: a plain string or `{"content": ...}`.
pub(crate) fn special_token_name(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(map) => map.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// `eos_token_id` of generation_config.json: one id or a list.
fn generation_eos_ids(config: &serde_json::Value) -> Vec<u32> {
    match config.get("eos_token_id") {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|id| id as u32).into_iter().collect(),
        Some(serde_json::Value::Array(ids)) => ids
            .iter()
            .filter_map(|v| v.as_u64())
            .map(|id| id as u32)
            .collect(),
        _ => vec![],
    }
}

fn gguf_string(content: &Content, key: &str) -> Result<String> {
    let value = content
        .metadata
        .get(key)
        .ok_or_else(|| anyhow!("GGUF metadata has no {key}"))?;
    value
        .to_string()
        .cloned()
        .map_err(|e| anyhow!("GGUF {key}: {e}"))
}

fn gguf_bool(content: &Content, key: &str) -> Result<Option<bool>> {
    content
        .metadata
        .get(key)
        .map(|v| v.to_bool().map_err(|e| anyhow!("GGUF {key}: {e}")))
        .transpose()
}

fn gguf_array<'a>(content: &'a Content, key: &str) -> Result<&'a Vec<Value>> {
    let value = content
        .metadata
        .get(key)
        .ok_or_else(|| anyhow!("GGUF metadata has no {key}"))?;
    value.to_vec().map_err(|e| anyhow!("GGUF {key}: {e}"))
}

#[cfg(test)]
#[path = "tokenizer_tests.rs"]
mod tests;
