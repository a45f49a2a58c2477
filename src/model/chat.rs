//! The LLM's tokenizer (any `tokenizers` tokenizer: SentencePiece-style for LLaMA/Vicuna,
//! byte-level BPE for SmolLM2) with its special tokens, and the chat templates the models were
//! tuned with: Vicuna v1 (LLaVA's `conv_vicuna_v1`) and ChatML (SmolLM2's own template).

use std::ops::Range;

use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

/// Vicuna v1's system prompt, the one LLaVA uses.
pub const VICUNA_SYSTEM: &str = "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.";

/// SmolLM2-Instruct's default system prompt, from its chat template.
pub const SMOLLM2_SYSTEM: &str =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

/// The prompt format of a model. Closed: each is written out below.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChatTemplate {
    /// `SYSTEM USER: q ASSISTANT: a</s>USER: q ASSISTANT:`.
    VicunaV1 { system: String },
    /// `<|im_start|>role\ntext<|im_end|>\n` per turn, the reply opened with
    /// `<|im_start|>assistant\n`.
    ChatMl { system: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

impl ChatTemplate {
    pub fn vicuna_v1() -> Self {
        Self::VicunaV1 {
            system: VICUNA_SYSTEM.into(),
        }
    }

    pub fn smollm2() -> Self {
        Self::ChatMl {
            system: SMOLLM2_SYSTEM.into(),
        }
    }

    /// The text of a conversation ending with an open assistant turn, ready for generation.
    /// `turns` alternate user / assistant, starting with the user.
    pub fn prompt(&self, turns: &[(Role, &str)]) -> String {
        let owned: Vec<(Role, String)> = turns.iter().map(|(r, m)| (*r, m.to_string())).collect();
        self.render(&owned, true).0
    }

    /// The text of a conversation and the byte ranges of what the assistant must produce:
    /// each answer with its end marker (Vicuna: ` answer</s>`, the space after `ASSISTANT:`
    /// included, as LLaVA's targets; ChatML: `answer<|im_end|>`). `open_reply` ends the text
    /// with an open assistant turn, as `prompt` does; otherwise the last turn is rendered as
    /// it is.
    pub fn render(
        &self,
        turns: &[(Role, String)],
        open_reply: bool,
    ) -> (String, Vec<Range<usize>>) {
        let mut text = String::new();
        let mut answers = Vec::new();
        match self {
            Self::VicunaV1 { system } => {
                text.push_str(system);
                text.push(' ');
                for (role, message) in turns {
                    match role {
                        Role::User => text.push_str(&format!("USER: {message} ")),
                        Role::Assistant => {
                            text.push_str("ASSISTANT:");
                            let start = text.len();
                            text.push_str(&format!(" {message}</s>"));
                            answers.push(start..text.len());
                        }
                    }
                }
                if open_reply {
                    text.push_str("ASSISTANT:");
                }
            }
            Self::ChatMl { system } => {
                text.push_str(&format!("<|im_start|>system\n{system}<|im_end|>\n"));
                for (role, message) in turns {
                    match role {
                        Role::User => {
                            text.push_str(&format!("<|im_start|>user\n{message}<|im_end|>\n"));
                        }
                        Role::Assistant => {
                            text.push_str("<|im_start|>assistant\n");
                            let start = text.len();
                            text.push_str(&format!("{message}<|im_end|>"));
                            answers.push(start..text.len());
                            text.push('\n');
                        }
                    }
                }
                if open_reply {
                    text.push_str("<|im_start|>assistant\n");
                }
            }
        }
        (text, answers)
    }

    /// Text that ends a reply under this template.
    pub fn stop_strings(&self) -> Vec<&'static str> {
        match self {
            Self::VicunaV1 { .. } => vec!["</s>"],
            Self::ChatMl { .. } => vec!["<|im_end|>"],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer: {0}")]
    Tokenizers(String),
}

/// A tokenizer with the ids generation needs.
#[derive(Debug, Clone)]
pub struct LlmTokenizer {
    pub tokenizer: Tokenizer,
    /// Prepended to a prompt when the model expects it (LLaMA's `<s>`).
    pub bos: Option<u32>,
    /// Tokens that end generation.
    pub eos: Vec<u32>,
    pub template: ChatTemplate,
    /// `tokenizer` with `<image>` added as a special token, so that the placeholder comes out
    /// of any text as one token wherever it stands (`data::conversation`); `tokenizer` itself
    /// keeps the model's own behaviour for plain text.
    pub conversation: Tokenizer,
    /// `<image>`'s id in `conversation`, past the model's vocabulary: it is always replaced by
    /// visual tokens before the model sees it.
    pub image_token: Option<u32>,
}

impl LlmTokenizer {
    /// Ids of `text` without added special tokens (special tokens written in the text, such
    /// as `<|im_start|>`, are still recognised).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TokenizerError::Tokenizers(e.to_string()))
    }

    /// `encode` with the model's BOS in front, as a prompt starts.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let mut ids: Vec<u32> = self.bos.into_iter().collect();
        ids.extend(self.encode(text)?);
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| TokenizerError::Tokenizers(e.to_string()))
    }
}
