//! Token ids and labels of a conversation in one pass, following LLaVA's `preprocess_v1`
//! targets (docs/design.md §1: only the assistant's answers and their end marker are
//! supervised, `<image>` becomes the visual tokens) without its re-tokenisation offsets.
//!
//! The chat template renders the whole text together with the byte range of each answer
//! (`ChatTemplate::render`); the tokenizer encodes that text once, and each token is labelled
//! by its byte offsets. Nothing is tokenized twice, so the ids are exactly the tokenizer's ids
//! for the rendered text, whatever it does at segment boundaries (SentencePiece's `▁`, merged
//! whitespace), and labels cannot drift from ids.
//!
//! The offset rule: a token is supervised when its byte span `[start, end)` overlaps an
//! answer's range. A token straddling the boundary carries answer text, so the model must
//! produce it after the prompt; leaving it out would leave the answer's first characters
//! untaught (ChatML's `\n` after `assistant` merges with an answer's own leading `\n` into
//! one token of SmolLM2's vocabulary, which is therefore supervised). A zero-width token at
//! byte `p` (an inserted character with no source text) belongs to the range holding `p`,
//! that is to the text that follows it: one inserted at an answer's start is the answer's,
//! one right after its end marker is not. Measured with `tokenizers` 0.23 (see
//! `tests/label_mask.rs`): offsets are bytes of the input; LLaMA's prepended `▁` is not
//! zero-width but takes the offsets of its segment's first character (after `<image>` or
//! `</s>`), and the byte-level pieces of one multi-byte character all carry that
//! character's whole span.
//!
//! The text is encoded with `LlmTokenizer::conversation`, where `<image>` is a special token
//! (added by `calm::io::tokenizer`): it always comes out as exactly one token, as LLaVA's
//! `IMAGE_TOKEN_INDEX`, the text on either side being tokenized as pieces of their own (as
//! `tokenizer_image_token` does), and is then widened into the slots of the visual tokens.

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
    /// The first token of each answer in the text (in training, its first supervised token).
    /// An open reply (`open_reply = true`) is not listed: it starts at `len()`.
    pub answer_starts: Vec<usize>,
    /// Empty for one conversation. For several packed by `pack_branches`: 0 for each token of
    /// the shared prefix, k for each token of the k-th conversation's own part.
    pub branches: Vec<u16>,
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

    /// The branch of token `i` (0: shared, or not packed).
    pub fn branch(&self, i: usize) -> u16 {
        self.branches.get(i).copied().unwrap_or(0)
    }

    /// Whether token `query` attends to token `key`: an earlier (or the same) token of the
    /// shared prefix or of its own branch.
    pub fn sees(&self, query: usize, key: usize) -> bool {
        let (q, k) = (self.branch(query), self.branch(key));
        key <= query && (k == 0 || k == q)
    }

    /// Each token's rotary position: its index in the conversation it came from.
    pub fn positions(&self) -> Vec<usize> {
        let mut shared = 0;
        let mut own: Vec<usize> = Vec::new();
        (0..self.len())
            .map(|i| match self.branch(i) as usize {
                0 => {
                    shared += 1;
                    shared - 1
                }
                b => {
                    if own.len() < b {
                        own.resize(b, 0);
                    }
                    own[b - 1] += 1;
                    shared + own[b - 1] - 1
                }
            })
            .collect()
    }

    /// The token whose logits predict token `i` (the one before it in its own conversation);
    /// `None` for the first.
    pub fn predecessor(&self, i: usize) -> Option<usize> {
        (0..i).rev().find(|&j| self.sees(i, j))
    }

    /// Every supervised token that has a predecessor, in order: (its index, the index whose
    /// logits predict it, its id).
    pub fn targets(&self) -> impl Iterator<Item = (usize, usize, u32)> + '_ {
        self.labels.iter().enumerate().filter_map(|(i, &label)| {
            let id = u32::try_from(label).ok()?;
            Some((i, self.predecessor(i)?, id))
        })
    }
}

/// Packs conversations about the same images into one row: their common prefix (everything
/// up to the end of the last image's slots, identical in all of them) once, then each one's
/// remainder as its own branch. Token `i` of a branch sees the prefix and its own branch
/// only, at the position it has alone, so each conversation is trained exactly as if it
/// were alone, while the visual tokens, the longest part of a short question, are paid for
/// once. Used on conversations already cut to length.
pub fn pack_branches(
    conversations: Vec<TokenizedConversation>,
) -> Result<TokenizedConversation, ConversationError> {
    let mut iter = conversations.into_iter();
    let mut packed = iter.next().ok_or(ConversationError::Empty)?;
    let prefix = match packed.image_starts.last() {
        Some(&start) => start + packed.visual_tokens,
        None => return Err(ConversationError::NothingShared),
    };
    packed.branches = vec![0; prefix];
    packed.branches.resize(packed.len(), 1);
    for (k, other) in iter.enumerate() {
        let branch = k + 2;
        if other.len() < prefix
            || other.ids[..prefix] != packed.ids[..prefix]
            || other.labels[..prefix] != packed.labels[..prefix]
            || other.image_starts != packed.image_starts
        {
            return Err(ConversationError::NoSharedPrefix(branch));
        }
        let offset = packed.len() - prefix;
        packed.answer_starts.extend(
            other
                .answer_starts
                .iter()
                .filter(|&&s| s >= prefix)
                .map(|s| s + offset),
        );
        packed.ids.extend(&other.ids[prefix..]);
        packed.labels.extend(&other.labels[prefix..]);
        let branch = u16::try_from(branch).map_err(|_| ConversationError::TooManyBranches)?;
        packed
            .branches
            .extend(std::iter::repeat_n(branch, other.len() - prefix));
    }
    Ok(packed)
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
    /// The tokenizer split out `<image>` tokens elsewhere too (the system prompt) or merged
    /// them into others (a tokenizer where `<image>` is not a special token).
    #[error("the text became {found} <image> tokens for {expected} images")]
    ImageTokens { found: usize, expected: usize },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("cutting to {max} tokens would split image {image}'s visual tokens")]
    SplitsImage { max: usize, image: usize },
    #[error("cutting to {max} tokens would drop image {image}, whose pixels the sample still has")]
    DropsImage { max: usize, image: usize },
    #[error(
        "conversation {0} of a packed sample does not open as the first does (the same text up to its last <image>)"
    )]
    NoSharedPrefix(usize),
    #[error("packing shares the tokens up to the last image, and the first conversation has none")]
    NothingShared,
    #[error("more conversations in one packed sample than branch ids")]
    TooManyBranches,
    #[error("a packed row cannot be cut; cut its conversations before packing them")]
    Packed,
}

/// `turns` alternate user/assistant starting with the user. `open_reply = false`: training,
/// the last turn is the assistant's. `open_reply = true`: inference, the last turn is the
/// user's and the ids end with the template's assistant opener, ready for generation (no
/// label supervised, earlier answers included: they are context, not targets). `images` is
/// the number of `<image>` placeholders the user turns must hold; each becomes
/// `visual_tokens` slots holding id 0 and `IGNORE_INDEX`. BOS goes first when the tokenizer
/// has one.
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
        .conversation
        .encode(text.as_str(), false)
        .map_err(|e| ConversationError::Tokenizer(e.to_string()))?;
    let mut out = TokenizedConversation {
        ids: Vec::with_capacity(encoding.len() + images * visual_tokens + 1),
        labels: Vec::with_capacity(encoding.len() + images * visual_tokens + 1),
        image_starts: Vec::with_capacity(images),
        visual_tokens,
        answer_starts: Vec::with_capacity(answers.len()),
        branches: Vec::new(),
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
        // The offset rule of the module doc: overlap supervises; a zero-width token goes
        // with the text that follows it.
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
        out.labels.push(if answer.is_some() && !open_reply {
            i64::from(id)
        } else {
            IGNORE_INDEX
        });
    }
    if out.image_starts.len() != images {
        return Err(ConversationError::ImageTokens {
            found: out.image_starts.len(),
            expected: images,
        });
    }
    Ok(out)
}

/// Cuts a conversation to at most `max` tokens, dropping its end (as LLaVA truncates to
/// `model_max_length`, keeping the beginning where the images and the instruction are).
/// Every image must survive whole: cutting through an image's slots is refused, and so is
/// cutting before one, because the sample's pixels still reach the encoder and each image
/// needs its slots (a row that silently lost an image would shift every later image of the
/// batch onto the wrong slots). An answer cut short keeps its first tokens supervised, as in
/// LLaVA.
pub fn truncate(
    mut conversation: TokenizedConversation,
    max: usize,
) -> Result<TokenizedConversation, ConversationError> {
    if conversation.len() <= max {
        return Ok(conversation);
    }
    // A packed row's tail is its last branch, not the end of one conversation.
    if !conversation.branches.is_empty() {
        return Err(ConversationError::Packed);
    }
    let v = conversation.visual_tokens;
    if let Some(image) = conversation.image_starts.iter().position(|&s| s + v > max) {
        let start = conversation.image_starts[image];
        return Err(if start < max {
            ConversationError::SplitsImage { max, image }
        } else {
            ConversationError::DropsImage { max, image }
        });
    }
    conversation.ids.truncate(max);
    conversation.labels.truncate(max);
    conversation.answer_starts.retain(|&s| s < max);
    Ok(conversation)
}
