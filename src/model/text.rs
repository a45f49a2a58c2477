//! The frozen text encoder of pretraining: a BERT and its WordPiece tokenizer giving the
//! all-MiniLM sentence embedding (sentence-transformers' `all-MiniLM-L6-v2`: masked mean
//! pooling, L2 normalisation). Like `FrozenEncoder` it is not a `Module`: no optimiser can be
//! handed its weights, and its outputs carry no graph.

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use tokenizers::Tokenizer;

use super::bert::{Bert, sentence_embedding};

#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("no sentences to embed")]
    Empty,
}

#[derive(Debug)]
pub struct TextEncoder {
    bert: Bert,
    tokenizer: Tokenizer,
    pad_token_id: u32,
    /// Where the weights live, without autodiff.
    device: Device,
}

/// Token ids of a batch of sentences, right-padded to the longest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    /// `[B, T]` row-major.
    pub input_ids: Vec<i64>,
    /// `[B, T]`: 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<i64>,
    pub batch: usize,
    pub length: usize,
}

impl TextEncoder {
    /// `max_length` truncates longer sentences (special tokens included); it is capped at
    /// the model's position table. The tokenizer's own padding is replaced by padding to the
    /// longest sentence of each batch.
    pub fn new(
        bert: Bert,
        mut tokenizer: Tokenizer,
        max_length: usize,
        pad_token_id: u32,
    ) -> Result<Self, TextError> {
        let positions = bert.embeddings.position_embeddings.weight.dims()[0];
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: max_length.min(positions),
                ..Default::default()
            }))
            .map_err(|e| TextError::Tokenizer(e.to_string()))?;
        let bert = bert.valid();
        let device = bert.devices().into_iter().next().unwrap_or_default();
        Ok(Self {
            bert,
            tokenizer,
            pad_token_id,
            device,
        })
    }

    /// The frozen BERT (without autodiff).
    pub fn bert(&self) -> &Bert {
        &self.bert
    }

    pub fn hidden_size(&self) -> usize {
        self.bert.embeddings.word_embeddings.weight.dims()[1]
    }

    pub fn tokenize(&self, sentences: &[&str]) -> Result<TokenBatch, TextError> {
        if sentences.is_empty() {
            return Err(TextError::Empty);
        }
        let encodings = self
            .tokenizer
            .encode_batch(sentences.to_vec(), true)
            .map_err(|e| TextError::Tokenizer(e.to_string()))?;
        let length = encodings
            .iter()
            .map(|e| e.get_ids().len())
            .max()
            .unwrap_or(0);
        let mut input_ids = Vec::with_capacity(sentences.len() * length);
        let mut attention_mask = Vec::with_capacity(sentences.len() * length);
        for e in &encodings {
            let ids = e.get_ids();
            input_ids.extend(ids.iter().map(|&i| i as i64));
            attention_mask.extend(std::iter::repeat_n(1, ids.len()));
            let pad = length - ids.len();
            input_ids.extend(std::iter::repeat_n(self.pad_token_id as i64, pad));
            attention_mask.extend(std::iter::repeat_n(0, pad));
        }
        Ok(TokenBatch {
            input_ids,
            attention_mask,
            batch: sentences.len(),
            length,
        })
    }

    /// Unit-length sentence embeddings `[N, H]`. With `autodiff` they enter an autodiff
    /// context as constants; either way no graph stands behind them.
    pub fn embed(&self, sentences: &[&str], autodiff: bool) -> Result<Tensor<2>, TextError> {
        let device = &self.device;
        let tokens = self.tokenize(sentences)?;
        let shape = [tokens.batch, tokens.length];
        let ids = Tensor::<2, Int>::from_data(TensorData::new(tokens.input_ids, shape), device);
        let mask =
            Tensor::<2, Int>::from_data(TensorData::new(tokens.attention_mask, shape), device)
                .float();
        let hidden = self
            .bert
            .forward(ids, Some(mask.clone()), None)
            .last_hidden_state;
        let embedding = sentence_embedding(hidden, mask);
        Ok(if autodiff {
            embedding.autodiff()
        } else {
            embedding
        })
    }
}
