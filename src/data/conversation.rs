//! Token ids and labels of a conversation in one pass (DESIGN.md section 1, LLaVA's
//! `preprocess_v1` targets without its offsets): the chat template renders the whole text and
//! the byte ranges of the assistant's answers; the tokenizer encodes that text once; a token
//! is supervised when its byte span overlaps an answer's range (so a token straddling the
//! boundary, which the model must produce, is supervised), everything else gets
//! `IGNORE_INDEX`. `<image>` is a special token of `LlmTokenizer` and becomes the visual
//! tokens' slots. Because nothing is tokenized twice, the ids are exactly the tokenizer's
//! ids for the rendered text, whatever the tokenizer does at segment boundaries.

use crate::data::instruct::IMAGE_PLACEHOLDER;
use crate::model::chat::{LlmTokenizer, Role};

/// The label of a token no loss is computed on (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedConversation {
    /// Visual slots hold 0, a placeholder the model overwrites.
    pub ids: Vec<u32>,
    /// `IGNORE_INDEX` or the token id itself (unshifted: the logits at t - 1 predict t).
    pub labels: Vec<i64>,
    /// Where image i's `visual_tokens` slots begin in `ids`.
    pub image_starts: Vec<usize>,
    pub visual_tokens: usize,
    /// The first supervised token of each assistant answer.
    pub answer_starts: Vec<usize>,
}

impl TokenizedConversation {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Supervised tokens.
    pub fn supervised(&self) -> usize {
        self.labels.iter().filter(|&&l| l != IGNORE_INDEX).count()
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConversationError {
    #[error("turn {0} should be the user's: turns alternate, starting with the user")]
    NotAlternating(usize),
    #[error("an empty conversation")]
    Empty,
    #[error("the conversation ends with the user's turn; a training sample ends with an answer")]
    NoFinalAnswer,
    #[error("the conversation ends with an answer, so there is no open turn to reply to")]
    NothingToReply,
    #[error("{found} <image> placeholders in the user turns for {expected} images")]
    Placeholders { found: usize, expected: usize },
    #[error("assistant turn {0} contains <image>")]
    ImageInAnswer(usize),
    #[error("the tokenizer has no <image> token (load it with calm::io::tokenizer)")]
    NoImageToken,
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("cutting to {max} tokens would split image {image}'s visual tokens")]
    SplitsImage { max: usize, image: usize },
}

/// `turns` alternate user/assistant starting with the user. `open_reply = false`: training,
/// the last turn is the assistant's. `open_reply = true`: inference, the last turn is the
/// user's and the ids end with the template's assistant opener (no label supervised).
/// `images` is the number of `<image>` placeholders the user turns must hold.
pub fn tokenize_conversation(
    tokenizer: &LlmTokenizer,
    turns: &[(Role, String)],
    images: usize,
    visual_tokens: usize,
    open_reply: bool,
) -> Result<TokenizedConversation, ConversationError> {
    if turns.is_empty() {
        return Err(ConversationError::Empty);
    }
    let mut found = 0;
    for (i, (role, text)) in turns.iter().enumerate() {
        let expected = if i % 2 == 0 {
            Role::User
        } else {
            Role::Assistant
        };
        if *role != expected {
            return Err(ConversationError::NotAlternating(i));
        }
        let count = text.matches(IMAGE_PLACEHOLDER).count();
        if *role == Role::Assistant && count > 0 {
            return Err(ConversationError::ImageInAnswer(i));
        }
        found += count;
    }
    let last = turns.len() - 1;
    match (open_reply, turns[last].0) {
        (false, Role::User) => return Err(ConversationError::NoFinalAnswer),
        (true, Role::Assistant) => return Err(ConversationError::NothingToReply),
        _ => {}
    }
    if found != images {
        return Err(ConversationError::Placeholders {
            found,
            expected: images,
        });
    }
    let image_token = match (images, tokenizer.image_token) {
        (0, token) => token,
        (_, Some(token)) => Some(token),
        (_, None) => return Err(ConversationError::NoImageToken),
    };
    let (text, answers) = tokenizer.template.render(turns, open_reply);
    let encoding = tokenizer
        .tokenizer
        .encode(text.as_str(), false)
        .map_err(|e| ConversationError::Tokenizer(e.to_string()))?;
    let mut out = TokenizedConversation {
        ids: Vec::with_capacity(encoding.len() + images * visual_tokens + 1),
        labels: Vec::with_capacity(encoding.len() + images * visual_tokens + 1),
        image_starts: Vec::with_capacity(images),
        visual_tokens,
        answer_starts: Vec::with_capacity(answers.len()),
    };
    if let Some(bos) = tokenizer.bos {
        out.ids.push(bos);
        out.labels.push(IGNORE_INDEX);
    }
    let mut answered = vec![false; answers.len()];
    for (&id, &(start, end)) in encoding.get_ids().iter().zip(encoding.get_offsets()) {
        if Some(id) == image_token {
            out.image_starts.push(out.ids.len());
            out.ids.extend(std::iter::repeat_n(0, visual_tokens));
            out.labels
                .extend(std::iter::repeat_n(IGNORE_INDEX, visual_tokens));
            continue;
        }
        // A zero-width token (one the normalizer inserted) belongs where it stands.
        let inside = |r: &std::ops::Range<usize>| {
            if start == end {
                r.start <= start && start < r.end
            } else {
                start < r.end && end > r.start
            }
        };
        let answer = answers.iter().position(inside);
        if let Some(a) = answer
            && !answered[a]
        {
            answered[a] = true;
            out.answer_starts.push(out.ids.len());
        }
        out.ids.push(id);
        out.labels.push(if answer.is_some() {
            i64::from(id)
        } else {
            IGNORE_INDEX
        });
    }
    if out.image_starts.len() != images {
        // The placeholder was merged into a larger token: only possible if the tokenizer
        // was not loaded through calm::io::tokenizer.
        return Err(ConversationError::NoImageToken);
    }
    Ok(out)
}

/// Cuts a conversation to at most `max` tokens, dropping its end (as LLaVA truncates to
/// `model_max_length`); refuses to cut through an image's visual tokens.
pub fn truncate(
    mut conversation: TokenizedConversation,
    max: usize,
) -> Result<TokenizedConversation, ConversationError> {
    if conversation.len() <= max {
        return Ok(conversation);
    }
    let v = conversation.visual_tokens;
    if let Some(image) = conversation
        .image_starts
        .iter()
        .position(|&s| s < max && s + v > max)
    {
        return Err(ConversationError::SplitsImage { max, image });
    }
    conversation.ids.truncate(max);
    conversation.labels.truncate(max);
    conversation.image_starts.retain(|&s| s + v <= max);
    conversation.answer_starts.retain(|&s| s < max);
    Ok(conversation)
}
