//! LLM tokenizers from files: a `tokenizer.json` (HF `tokenizers` format; the LLaMA-2 /
//! Vicuna vocabulary, or a model's own), or the vocabulary in a GGUF file's metadata. BOS and
//! EOS are found by the conventional names of the two families (`<s>`/`</s>` for LLaMA's SentencePiece vocabulary; `<|im_end|>` ends a
//! ChatML turn), and the chat template follows the vocabulary: ChatML when it has
//! `<|im_start|>`, Vicuna v1 otherwise.

use std::path::Path;

use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

use super::checkpoint::CheckpointError;
use super::gguf::{GgufError, GgufFile};
use crate::data::instruct::IMAGE_PLACEHOLDER;
use crate::model::chat::{ChatTemplate, LlmTokenizer};

/// Reads a `tokenizer.json` file, or the one inside a checkpoint folder.
pub fn load_tokenizer_json(path: &Path) -> Result<LlmTokenizer, CheckpointError> {
    let file = if path.is_dir() {
        path.join("tokenizer.json")
    } else {
        path.to_path_buf()
    };
    let bytes =
        crate::files::read_bytes(&file, crate::files::MAX_ANNOTATION_BYTES).map_err(|source| {
            CheckpointError::Io {
                path: file.clone(),
                source,
            }
        })?;
    let tokenizer = Tokenizer::from_bytes(bytes).map_err(|e| CheckpointError::Format {
        path: file.clone(),
        message: e.to_string(),
    })?;
    Ok(with_conventions(tokenizer))
}

/// BOS, EOS and the chat template from the vocabulary's special tokens.
pub(crate) fn with_conventions(tokenizer: Tokenizer) -> LlmTokenizer {
    // Split out as LLaVA's `tokenizer_image_token` splits the text at the placeholder: the
    // text on either side is tokenized as a piece of its own.
    let mut conversation = tokenizer.clone();
    let image_token = conversation
        .add_special_tokens([AddedToken::from(IMAGE_PLACEHOLDER, true)])
        .ok()
        .and_then(|_| conversation.token_to_id(IMAGE_PLACEHOLDER));
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
        conversation,
        image_token,
    }
}

/// The tokenizer stored in a GGUF file's metadata. Byte-level BPE (`tokenizer.ggml.model =
/// gpt2`, SmolLM2's) is rebuilt from `tokens` and `merges`: digits split one by one (the
/// `smollm` pre-tokenizer), then GPT-2's byte-level split; control tokens
/// (`token_type` 3) are special, so `<|im_start|>` in a prompt stays one token.
pub fn load_gguf_tokenizer(file: &GgufFile) -> Result<LlmTokenizer, CheckpointError> {
    let format = |message: String| CheckpointError::Format {
        path: file.path.clone(),
        message,
    };
    let err = |e: GgufError| format(e.to_string());
    let kind = file.get_str("tokenizer.ggml.model").map_err(err)?;
    if kind != "gpt2" {
        return Err(format(format!(
            "tokenizer.ggml.model `{kind}` is not supported from GGUF (gpt2 is); use the model's tokenizer.json"
        )));
    }
    let tokens = file.get_str_array("tokenizer.ggml.tokens").map_err(err)?;
    let merges = file.get_str_array("tokenizer.ggml.merges").map_err(err)?;
    let types = file
        .get_i32_array("tokenizer.ggml.token_type")
        .unwrap_or_default();
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as u32))
        .collect();
    let merges = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| format(format!("merge `{m}` is not two tokens")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| format(e.to_string()))?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
        Digits::new(true).into(),
        ByteLevel::new(false, true, true).into(),
    ])));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    let specials: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, t)| **t == 3)
        .map(|(token, _)| AddedToken::from(token.to_string(), true))
        .collect();
    tokenizer
        .add_special_tokens(specials)
        .map_err(|e| format(e.to_string()))?;
    let mut tok = with_conventions(tokenizer);
    if file
        .get_bool("tokenizer.ggml.add_bos_token")
        .unwrap_or(false)
    {
        tok.bos = file.get_u32("tokenizer.ggml.bos_token_id").ok();
    }
    Ok(tok)
}
