//! `prompts.yaml`: prompt categories, prompts (plain text or chat turns), the seeded
//! selection of a run's prompts, and validation.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{ConfigError, KeyPath, SourceFile};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptCategory {
    Short,
    Medium,
    Long,
}

impl PromptCategory {
    pub const ALL: [PromptCategory; 3] = [
        PromptCategory::Short,
        PromptCategory::Medium,
        PromptCategory::Long,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PromptCategory::Short => "short",
            PromptCategory::Medium => "medium",
            PromptCategory::Long => "long",
        }
    }
}

impl fmt::Display for PromptCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptsFile {
    pub short: PromptCategoryConfig,
    pub medium: PromptCategoryConfig,
    pub long: PromptCategoryConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptCategoryConfig {
    pub min_new_tokens: usize,
    pub max_new_tokens: usize,
    pub prompts: Vec<Prompt>,
}

/// A prompt is either plain `text` (sent as one user turn) or a chat history in `messages`
/// ending with a user turn; exactly one of the two is given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prompt {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<ChatMessage>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    pub role: ChatRole,
    pub content: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    System,
    User,
    Assistant,
}

impl ChatRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ChatRole::System => "system",
            ChatRole::User => "user",
            ChatRole::Assistant => "assistant",
        }
    }
}

impl Prompt {
    /// The prompt as chat turns (plain text becomes a single user turn).
    pub fn messages(&self) -> Vec<ChatMessage> {
        match (&self.messages, &self.text) {
            (Some(messages), _) => messages.clone(),
            (None, Some(text)) => vec![ChatMessage {
                role: ChatRole::User,
                content: text.clone(),
            }],
            (None, None) => Vec::new(),
        }
    }

    /// The prompt as one string for models without a chat template and for display.
    pub fn plain_text(&self) -> String {
        match (&self.messages, &self.text) {
            (Some(messages), _) => messages
                .iter()
                .map(|m| format!("{}: {}", m.role.as_str(), m.content.trim_end()))
                .collect::<Vec<_>>()
                .join("\n\n"),
            (None, Some(text)) => text.clone(),
            (None, None) => String::new(),
        }
    }

    /// Characters of content, a cheap proxy for length (≈ 4 per token in English).
    pub fn char_count(&self) -> usize {
        self.messages()
            .iter()
            .map(|m| m.content.chars().count())
            .sum()
    }
}

impl PromptsFile {
    pub fn category(&self, category: PromptCategory) -> &PromptCategoryConfig {
        match category {
            PromptCategory::Short => &self.short,
            PromptCategory::Medium => &self.medium,
            PromptCategory::Long => &self.long,
        }
    }

    /// `count` prompts of `category` in an order fixed by `seed`: a seeded permutation of the
    /// category, repeated when `count` exceeds its size, so trial t uses entry t.
    pub fn select(&self, category: PromptCategory, count: usize, seed: u64) -> Vec<&Prompt> {
        let pool = &self.category(category).prompts;
        if pool.is_empty() {
            return Vec::new();
        }
        let mut order: Vec<usize> = (0..pool.len()).collect();
        let mut rng = SplitMix64(seed ^ (category as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for i in (1..order.len()).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        (0..count).map(|i| &pool[order[i % order.len()]]).collect()
    }
}

/// Tiny deterministic generator so prompt selection is stable across versions and platforms.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

pub(super) fn validate_prompts(
    file: &SourceFile,
    prompts: &PromptsFile,
) -> Result<(), ConfigError> {
    let mut seen_ids = BTreeSet::new();
    for category in PromptCategory::ALL {
        let at = KeyPath::root().key(category.as_str());
        let config = prompts.category(category);
        if config.max_new_tokens == 0 {
            return Err(file.error_at(
                &at.key("max_new_tokens"),
                "0 (expected at least 1 new token)",
            ));
        }
        if config.min_new_tokens > config.max_new_tokens {
            return Err(file.error_at(
                &at.key("min_new_tokens"),
                format!(
                    "{} > max_new_tokens {} (expected min_new_tokens ≤ max_new_tokens)",
                    config.min_new_tokens, config.max_new_tokens
                ),
            ));
        }
        if config.prompts.is_empty() {
            return Err(file.error_at(
                &at.key("prompts"),
                "empty prompt category (expected at least one prompt)",
            ));
        }
        for (i, prompt) in config.prompts.iter().enumerate() {
            let at = at.key("prompts").index(i);
            if prompt.id.trim().is_empty() {
                return Err(file.error_at(&at.key("id"), "empty id (expected a short unique name)"));
            }
            if !seen_ids.insert(prompt.id.as_str()) {
                return Err(file.error_at(
                    &at.key("id"),
                    format!("duplicate prompt id \"{}\"", prompt.id),
                ));
            }
            match (&prompt.text, &prompt.messages) {
                (Some(_), Some(_)) => {
                    return Err(file.error_at(
                        &at.key("messages"),
                        "both `text` and `messages` given (expected one)",
                    ))
                }
                (None, None) => {
                    return Err(
                        file.error_at(&at, "neither `text` nor `messages` given (expected one)")
                    )
                }
                (Some(text), None) if text.trim().is_empty() => {
                    return Err(file.error_at(&at.key("text"), "empty text"))
                }
                (None, Some(messages)) => {
                    if messages.last().map(|m| m.role) != Some(ChatRole::User) {
                        return Err(file.error_at(
                            &at.key("messages"),
                            "the last message must have role user (the model answers it)",
                        ));
                    }
                    if let Some(j) = messages.iter().position(|m| m.content.trim().is_empty()) {
                        return Err(file.error_at(&at.key("messages").index(j), "empty content"));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}
