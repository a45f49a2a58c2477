//! LLM tokenizers from files: a `tokenizer.json` (HF `tokenizers` format; the LLaMA-2 /
//! Vicuna vocabulary, or a model's own). BOS and EOS are found by the conventional names of
//! the two families (`<s>`/`</s>` for LLaMA's SentencePiece vocabulary; `<|im_end|>` ends a
//! ChatML turn), and the chat template follows the vocabulary: ChatML when it has
//! `<|im_start|>`, Vicuna v1 otherwise.

use std::path::Path;

use tokenizers::Tokenizer;

use super::checkpoint::CheckpointError;
use crate::model::chat::{ChatTemplate, LlmTokenizer};

/// Reads a `tokenizer.json` file, or the one inside a checkpoint folder.
pub fn load_tokenizer_json(path: &Path) -> Result<LlmTokenizer, CheckpointError> {
    let file = if path.is_dir() {
        path.join("tokenizer.json")
    } else {
        path.to_path_buf()
    };
    let tokenizer = Tokenizer::from_file(&file).map_err(|e| CheckpointError::Format {
        path: file.clone(),
        message: e.to_string(),
    })?;
    Ok(with_conventions(tokenizer))
}

/// BOS, EOS and the chat template from the vocabulary's special tokens.
pub(crate) fn with_conventions(tokenizer: Tokenizer) -> LlmTokenizer {
    let id = |t: &str| tokenizer.token_to_id(t);
    let chat_ml = id("<|im_start|>").is_some();
    let (bos, eos, template) = if chat_ml {
        let eos = [id("<|im_end|>"), id("<|endoftext|>")]
            .into_iter()
            .flatten()
            .collect();
        (None, eos, ChatTemplate::smollm2())
    } else {
        (
            id("<s>"),
            id("</s>").into_iter().collect(),
            ChatTemplate::vicuna_v1(),
        )
    };
    LlmTokenizer {
        tokenizer,
        bos,
        eos,
        template,
    }
}
