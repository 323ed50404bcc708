//! Chat prompts rendered with the model's own Jinja chat template, the way Hugging Face
//! `apply_chat_template` renders them, so the prompt ids match what the model was tuned on.

use std::fmt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use candle_core::quantized::gguf_file::Content;
use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State};
use serde::{Deserialize, Serialize};

use crate::model::tokenizer::special_token_name;
use crate::util::{read_optional_text, MAX_MODEL_TEXT_BYTES};

/// Name the template is registered under inside its environment.
const TEMPLATE_NAME: &str = "chat_template";

/// One turn of a conversation, as chat templates see it (`message['role']`, `message.content`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A compiled chat template with the bos/eos token strings templates may reference.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_len", &self.source.len())
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles `source` with the whitespace rules and helpers of transformers' template
    /// environment (`trim_blocks`, `lstrip_blocks`, `raise_exception`, `strftime_now`, `tojson`,
    /// and the Python string/dict methods templates commonly call).
    pub fn new(
        source: impl Into<String>,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Result<Self> {
        let source = source.into();
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.set_unknown_method_callback(python_method);
        env.add_template_owned(TEMPLATE_NAME, source.clone())
            .map_err(|e| anyhow!("compiling the chat template: {e:#}"))?;
        Ok(Self {
            env,
            source,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        })
    }

    /// The template in GGUF metadata `tokenizer.chat_template`; `None` when the file has none.
    pub fn from_gguf(content: &Content) -> Result<Option<Self>> {
        let Some(value) = content.metadata.get("tokenizer.chat_template") else {
            return Ok(None);
        };
        let source = value
            .to_string()
            .map_err(|e| anyhow!("GGUF tokenizer.chat_template: {e}"))?;
        let token_at = |key: &str| -> Result<String> {
            let Some(id) = content.metadata.get(key) else {
                return Ok(String::new());
            };
            let id = id.to_u32().map_err(|e| anyhow!("GGUF {key}: {e}"))? as usize;
            let tokens = content
                .metadata
                .get("tokenizer.ggml.tokens")
                .ok_or_else(|| anyhow!("GGUF has {key} but no tokenizer.ggml.tokens"))?
                .to_vec()
                .map_err(|e| anyhow!("GGUF tokenizer.ggml.tokens: {e}"))?;
            let token = tokens.get(id).ok_or_else(|| {
                anyhow!(
                    "GGUF {key} = {id} is outside the {}-token vocabulary",
                    tokens.len()
                )
            })?;
            Ok(token
                .to_string()
                .map_err(|e| anyhow!("GGUF tokenizer.ggml.tokens[{id}]: {e}"))?
                .clone())
        };
        let bos = token_at("tokenizer.ggml.bos_token_id")?;
        let eos = token_at("tokenizer.ggml.eos_token_id")?;
        Self::new(source.clone(), bos, eos)
            .context("GGUF tokenizer.chat_template")
            .map(Some)
    }

    /// The template of a Hugging Face checkpoint, given its `tokenizer_config.json`: a sibling
    /// `chat_template.jinja` wins (as in transformers), else the config's `chat_template` field
    /// (a string, or a list of named templates of which "default" is used). `None` when neither
    /// exists. bos/eos token strings come from the config.
    pub fn from_tokenizer_config(path: &Path) -> Result<Option<Self>> {
        let config: Option<serde_json::Value> =
            match read_optional_text(path, MAX_MODEL_TEXT_BYTES)? {
                Some(text) => Some(
                    serde_json::from_str(&text)
                        .with_context(|| format!("parsing {}", path.display()))?,
                ),
                None => None,
            };
        let jinja_path = path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join("chat_template.jinja");
        let (source, origin) = match read_optional_text(&jinja_path, MAX_MODEL_TEXT_BYTES)? {
            Some(text) => (text, jinja_path.display().to_string()),
            None => {
                let field = config
                    .as_ref()
                    .and_then(|c| c.get("chat_template"))
                    .filter(|v| !v.is_null());
                match field.map(template_from_config_field).transpose() {
                    Ok(Some(text)) => (text, format!("{}: chat_template", path.display())),
                    Ok(None) => return Ok(None),
                    Err(e) => return Err(e.context(format!("{}: chat_template", path.display()))),
                }
            }
        };
        let token = |key: &str| {
            config
                .as_ref()
                .and_then(|c| c.get(key))
                .and_then(special_token_name)
                .unwrap_or_default()
        };
        Self::new(source, token("bos_token"), token("eos_token"))
            .with_context(|| origin)
            .map(Some)
    }

    /// Renders `messages`; `add_generation_prompt` appends the header that opens the
    /// assistant's turn, which is what a prompt for generation needs.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| anyhow!("chat template: {e:#}"))?;
        let context = minijinja::context! {
            messages => Value::from_serialize(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        };
        template.render(context).map_err(|e| {
            anyhow!(
                "rendering the chat template for {} messages: {e:#}",
                messages.len()
            )
        })
    }

    /// The Jinja source, for display and for recording what rendered a prompt.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }
}

fn template_from_config_field(field: &serde_json::Value) -> Result<String> {
    match field {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Array(named) => {
            let named_template = |wanted: Option<&str>| {
                named.iter().find_map(|entry| {
                    let name = entry.get("name")?.as_str()?;
                    let template = entry.get("template")?.as_str()?;
                    wanted
                        .is_none_or(|w| w == name)
                        .then(|| template.to_string())
                })
            };
            named_template(Some("default"))
                .or_else(|| named_template(None))
                .ok_or_else(|| {
                    anyhow!("a list of templates without a usable {{name, template}} entry")
                })
        }
        other => Err(anyhow!(
            "expected a string or a list of named templates, found {other}"
        )),
    }
}

/// Templates call `raise_exception(...)` to reject conversations they cannot format.
fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!("the chat template raised: {message}"),
    ))
}

/// Current UTC time formatted with a strftime subset (transformers passes local time; a
/// verifier re-rendering later gets the date it renders on either way).
fn strftime_now(format: String) -> Result<String, Error> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("system clock before 1970: {e}"),
        )
    })?;
    format_unix_time(now.as_secs() as i64, &format)
}

fn format_unix_time(seconds: i64, format: &str) -> Result<String, Error> {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const WEEKDAYS: [&str; 7] = [
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
    ];
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = crate::util::civil_date_from_days(days);
    let weekday = (days + 4).rem_euclid(7) as usize; // 1970-01-01 was a Thursday.
    let month_name = MONTHS[month as usize - 1];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out += &year.to_string(),
            Some('y') => out += &format!("{:02}", year.rem_euclid(100)),
            Some('m') => out += &format!("{month:02}"),
            Some('d') => out += &format!("{day:02}"),
            Some('-') if chars.clone().next() == Some('d') => {
                chars.next();
                out += &day.to_string();
            }
            Some('H') => out += &format!("{:02}", second_of_day / 3600),
            Some('M') => out += &format!("{:02}", second_of_day / 60 % 60),
            Some('S') => out += &format!("{:02}", second_of_day % 60),
            Some('B') => out += month_name,
            Some('b') => out += &month_name[..3],
            Some('A') => out += WEEKDAYS[weekday],
            Some('a') => out += &WEEKDAYS[weekday][..3],
            Some('%') => out.push('%'),
            other => {
                let spec = other
                    .map(|c| format!("%{c}"))
                    .unwrap_or_else(|| "a trailing %".into());
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("strftime_now: {spec} in {format:?} is not supported"),
                ));
            }
        }
    }
    Ok(out)
}

/// transformers' `tojson`: Python `json.dumps` spacing (`", "`, `": "`), non-ASCII kept, and
/// an optional `indent`.
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let mut out = Vec::new();
    let written = match indent {
        Some(width) => {
            let indent = vec![b' '; width];
            let formatter = serde_json::ser::PrettyFormatter::with_indent(&indent);
            value.serialize(&mut serde_json::Serializer::with_formatter(
                &mut out, formatter,
            ))
        }
        None => value.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out,
            PythonJsonFormatter,
        )),
    };
    written.map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let text = String::from_utf8(out).expect("serde_json writes UTF-8");
    Ok(Value::from_safe_string(text))
}

/// Compact JSON with the separators of Python's `json.dumps` defaults.
struct PythonJsonFormatter;

impl serde_json::ser::Formatter for PythonJsonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

/// The Python `str`/`dict` methods Hugging Face templates call (`.strip()`, `.startswith()`,
/// `.items()`, ...), which Jinja inherits from Python and minijinja does not have.
fn python_method(
    _state: &State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    let unknown = || {
        Error::new(
            ErrorKind::UnknownMethod,
            format!(
                "{method}() on a {} is not supported by this template engine",
                value.kind()
            ),
        )
    };
    let str_arg = |index: usize| -> Result<Option<&str>, Error> {
        match args.get(index) {
            None => Ok(None),
            Some(v) if v.is_none() => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    format!("{method}() expects a string argument, got {v}"),
                )
            }),
        }
    };
    match value.kind() {
        ValueKind::String => {
            let s = value.as_str().unwrap_or_default();
            let trim_set = |chars: Option<&str>| -> Box<dyn Fn(char) -> bool> {
                match chars {
                    Some(set) => {
                        let set = set.to_string();
                        Box::new(move |c| set.contains(c))
                    }
                    None => Box::new(char::is_whitespace),
                }
            };
            let result = match method {
                "strip" => Value::from(s.trim_matches(trim_set(str_arg(0)?))),
                "lstrip" => Value::from(s.trim_start_matches(trim_set(str_arg(0)?))),
                "rstrip" => Value::from(s.trim_end_matches(trim_set(str_arg(0)?))),
                "startswith" => Value::from(s.starts_with(str_arg(0)?.unwrap_or_default())),
                "endswith" => Value::from(s.ends_with(str_arg(0)?.unwrap_or_default())),
                "upper" => Value::from(s.to_uppercase()),
                "lower" => Value::from(s.to_lowercase()),
                "replace" => {
                    let (Some(from), Some(to)) = (str_arg(0)?, str_arg(1)?) else {
                        return Err(Error::new(
                            ErrorKind::InvalidOperation,
                            "replace() expects two strings",
                        ));
                    };
                    Value::from(s.replace(from, to))
                }
                "split" => match str_arg(0)? {
                    Some(separator) => {
                        Value::from(s.split(separator).map(Value::from).collect::<Vec<_>>())
                    }
                    None => Value::from(s.split_whitespace().map(Value::from).collect::<Vec<_>>()),
                },
                _ => return Err(unknown()),
            };
            Ok(result)
        }
        ValueKind::Map => {
            let keys: Vec<Value> = value.try_iter()?.collect();
            let result = match method {
                "keys" => Value::from(keys),
                "values" => Value::from(
                    keys.iter()
                        .map(|k| value.get_item(k))
                        .collect::<Result<Vec<_>, _>>()?,
                ),
                "items" => Value::from(
                    keys.iter()
                        .map(|k| Ok(Value::from(vec![k.clone(), value.get_item(k)?])))
                        .collect::<Result<Vec<_>, Error>>()?,
                ),
                "get" => {
                    let key = args.first().cloned().unwrap_or_default();
                    let found = value.get_item(&key)?;
                    if found.is_undefined() {
                        args.get(1).cloned().unwrap_or(Value::from(()))
                    } else {
                        found
                    }
                }
                _ => return Err(unknown()),
            };
            Ok(result)
        }
        _ => Err(unknown()),
    }
}

/// Renders chat messages with the model's own template and encodes the text as a rendered
/// prompt (`TextTokenizer::encode_rendered`: the template writes its own special tokens);
/// without a template, the contents joined by newlines and encoded as plain text.
pub fn render_prompt(
    model: &super::LoadedModel,
    messages: &[(String, String)],
) -> Result<(String, Vec<u32>)> {
    match &model.chat_template {
        Some(t) => {
            let msgs: Vec<ChatMessage> = messages
                .iter()
                .map(|(role, content)| ChatMessage {
                    role: role.clone(),
                    content: content.clone(),
                })
                .collect();
            let text = t.render(&msgs, true)?;
            let ids = model.tokenizer.encode_rendered(&text)?;
            Ok((text, ids))
        }
        None => {
            let text = messages
                .iter()
                .map(|(_, c)| c.as_str())
                .collect::<Vec<_>>()
                .join("\n");
            let ids = model.tokenizer.encode(&text)?;
            Ok((text, ids))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// Where the shared fixtures and the test GGUF are (the crate's test helpers can replace this).
    fn test_paths() -> (PathBuf, PathBuf) {
        (
            crate::testutil::smollm_fixture(""),
            crate::testutil::embedded_gguf(),
        )
    }

    /// The first fixture text: SmolLM2's default system prompt, one user turn, and the
    /// assistant header.
    fn fixture_prompt() -> String {
        let path = crate::testutil::smollm_fixture("tokenization.json");
        let cases: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        cases[0]["text"].as_str().unwrap().to_string()
    }

    const SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";
    const QUESTION: &str =
        "Explain what decorators are in Python. How do they work? What are some common use cases?";

    fn gguf_template() -> ChatTemplate {
        let mut file = std::fs::File::open(test_paths().1).unwrap();
        let content = Content::read(&mut file).unwrap();
        ChatTemplate::from_gguf(&content)
            .unwrap()
            .expect("SmolLM2's GGUF has a chat template")
    }

    fn hf_template() -> ChatTemplate {
        let config = crate::testutil::smollm_fixture("hf_tokenizer/tokenizer_config.json");
        ChatTemplate::from_tokenizer_config(&config)
            .unwrap()
            .expect("chat_template.jinja is beside the config")
    }

    #[test]
    fn smollm2_templates_reproduce_the_fixture_prompt() {
        let expected = fixture_prompt();
        for template in [gguf_template(), hf_template()] {
            let messages = [
                ChatMessage::new("system", SYSTEM),
                ChatMessage::new("user", QUESTION),
            ];
            assert_eq!(template.render(&messages, true).unwrap(), expected);
            // The template adds SmolLM2's default system prompt when the caller gives none.
            assert_eq!(
                template
                    .render(&[ChatMessage::new("user", QUESTION)], true)
                    .unwrap(),
                expected
            );
            let without_header = template.render(&messages, false).unwrap();
            assert_eq!(
                without_header,
                expected.strip_suffix("<|im_start|>assistant\n").unwrap()
            );
            assert_eq!(template.bos_token(), "<|im_start|>");
            assert_eq!(template.eos_token(), "<|im_end|>");
        }
    }

    #[test]
    fn tokenizer_config_field_is_used_without_a_jinja_file() {
        let dir = std::env::temp_dir().join(format!("verillm-chat-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("tokenizer_config.json");
        let source = "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{{ eos_token }}{% endfor %}";
        let body = serde_json::json!({
            "bos_token": {"content": "<s>"},
            "eos_token": "</s>",
            "chat_template": [{"name": "tool_use", "template": "x"}, {"name": "default", "template": source}],
        });
        std::fs::write(&config, body.to_string()).unwrap();
        let template = ChatTemplate::from_tokenizer_config(&config)
            .unwrap()
            .unwrap();
        let rendered = template
            .render(&[ChatMessage::new("user", "hi")], false)
            .unwrap();
        assert_eq!(rendered, "<s>[user]hi</s>");

        std::fs::write(&config, r#"{"eos_token": "</s>"}"#).unwrap();
        assert!(ChatTemplate::from_tokenizer_config(&config)
            .unwrap()
            .is_none());
        // An explicit null is "no template", as an absent field.
        std::fs::write(&config, r#"{"chat_template": null}"#).unwrap();
        assert!(ChatTemplate::from_tokenizer_config(&config)
            .unwrap()
            .is_none());
        // Without tokenizer_config.json, a chat_template.jinja beside it is still found.
        std::fs::remove_file(&config).unwrap();
        std::fs::write(
            dir.join("chat_template.jinja"),
            "<{{ messages[0].content }}>",
        )
        .unwrap();
        let template = ChatTemplate::from_tokenizer_config(&config)
            .unwrap()
            .unwrap();
        let rendered = template
            .render(&[ChatMessage::new("user", "hi")], false)
            .unwrap();
        assert_eq!(rendered, "<hi>");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hf_template_conventions_are_supported() {
        // Block tags on their own lines vanish with their newline (trim_blocks/lstrip_blocks).
        let source = "{% for m in messages %}\n  {% if m.role == 'system' %}\n{{ raise_exception('no system turns') }}\n  {% endif %}\n<{{ m.content.strip() | upper }}|{{ m.content.startswith(' he') }}>\n{% endfor %}\n";
        let template = ChatTemplate::new(source, "", "").unwrap();
        let rendered = template
            .render(&[ChatMessage::new("user", " hello ")], false)
            .unwrap();
        assert_eq!(rendered, "<HELLO|True>\n");
        let err = template
            .render(&[ChatMessage::new("system", "x")], false)
            .unwrap_err();
        assert!(format!("{err:#}").contains("no system turns"), "{err:#}");

        let source = "{{ {'a': [1, 'é'], 'b': none} | tojson }} {% for k, v in {'k': 1}.items() %}{{ k }}={{ v }}{% endfor %}";
        let rendered = ChatTemplate::new(source, "", "")
            .unwrap()
            .render(&[], false)
            .unwrap();
        assert_eq!(rendered, r#"{"a": [1, "é"], "b": null} k=1"#);

        // transformers' Jinja has {% break %} and {% continue %}; some templates use them.
        let source = "{% for m in messages %}{% if m.role == 'tool' %}{% continue %}{% endif %}{{ m.content }}{% if m.content == 'b' %}{% break %}{% endif %}{% endfor %}";
        let rendered = ChatTemplate::new(source, "", "")
            .unwrap()
            .render(
                &[
                    ChatMessage::new("user", "a"),
                    ChatMessage::new("tool", "x"),
                    ChatMessage::new("user", "b"),
                    ChatMessage::new("user", "c"),
                ],
                false,
            )
            .unwrap();
        assert_eq!(rendered, "ab");
    }

    #[test]
    fn strftime_subset_formats_known_dates() {
        assert_eq!(
            format_unix_time(0, "%Y-%m-%d %H:%M:%S %a %b").unwrap(),
            "1970-01-01 00:00:00 Thu Jan"
        );
        // 2024-02-29 13:05:09 UTC, a leap day.
        assert_eq!(
            format_unix_time(1_709_211_909, "%d %B %Y, %A %-d %y %%").unwrap(),
            "29 February 2024, Thursday 29 24 %"
        );
        assert!(format_unix_time(0, "%Q").is_err());
        assert!(!strftime_now("%Y".into()).unwrap().is_empty());
    }

    #[test]
    fn templates_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ChatTemplate>();
    }

    #[test]
    fn syntax_errors_are_reported_at_load() {
        let err = ChatTemplate::new("{% for m in messages %}", "", "").unwrap_err();
        assert!(
            format!("{err:#}").contains("compiling the chat template"),
            "{err:#}"
        );
    }
}
