//! BERT (Devlin et al., 2019), equal to HF `transformers`' `BertModel`: word, absolute position
//! and token-type embeddings, post-LN encoder layers, tanh pooler on the first token. Also the
//! building blocks the BLIP-2 Q-Former shares with it, and the all-MiniLM sentence embedding
//! (masked mean pooling, then L2 normalisation; Reimers & Gurevych, 2019).
//!
//! Field names are HF's checkpoint keys, with one exception: BERT's `attention.self.*` cannot
//! be a Rust field, so the loader maps it onto `attention.attention.*`, the Q-Former's name for
//! the same block.

#![allow(non_snake_case)]

use burn::module::{Module, Param};
use burn::nn::LinearConfig;
use burn::nn::{Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use super::HiddenAct;
use super::precision::{Precision, lin, mm};

/// HF `BertConfig` fields; the default is MiniLM-L6-H384 (all-MiniLM-L6-v2, docs/design.md §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: HiddenAct,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub pad_token_id: usize,
}

impl Default for BertConfig {
    fn default() -> Self {
        Self {
            vocab_size: 30522,
            hidden_size: 384,
            num_hidden_layers: 6,
            num_attention_heads: 12,
            intermediate_size: 1536,
            hidden_act: HiddenAct::Gelu,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
        }
    }
}

/// BERT's initialisation (`initializer_range` 0.02): weights from N(0, 0.02), zero bias. Used
/// for every freshly initialised BERT-family linear layer, the Q-Former's cross-attention
/// included, as BLIP-2 does.
pub(crate) fn bert_linear(input: usize, output: usize, device: &Device) -> Linear {
    let mut linear = LinearConfig::new(input, output)
        .with_initializer(Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        })
        .init(device);
    linear.bias = Some(Param::from_tensor(Tensor::zeros([output], device)));
    linear
}

pub(crate) fn layer_norm(size: usize, eps: f64, device: &Device) -> LayerNorm {
    LayerNormConfig::new(size).with_epsilon(eps).init(device)
}

/// Additive attention bias from a key padding mask `[B, S]` (non-zero = attend): `[B, 1, 1, S]`,
/// 0 where attended and the most negative f32 elsewhere, as HF's eager attention.
pub fn padding_bias(mask: Tensor<2>) -> Tensor<4> {
    let [b, s] = mask.dims();
    let blocked = mask.equal_elem(0.0).float();
    (blocked * f32::MIN).reshape([b, 1, 1, s])
}

/// The BLIP-2 image-grounded text generation (ITG) mask over `[queries; text]`, `[B, 1, T, T]`
/// with `T = query_length + text_length`: queries see every query and no text; each text token
/// sees every query and the text up to itself. `text_padding` `[B, text_length]` (non-zero =
/// real token) additionally blocks padded text keys.
pub fn multimodal_causal_bias(query_length: usize, text_padding: Tensor<2>) -> Tensor<4> {
    let [b, text] = text_padding.dims();
    let device = text_padding.device();
    let t = query_length + text;
    let mut allowed = vec![0f32; t * t];
    for row in 0..t {
        for col in 0..t {
            let ok = if row < query_length {
                col < query_length
            } else {
                col <= row
            };
            allowed[row * t + col] = if ok { 1.0 } else { 0.0 };
        }
    }
    let structure = Tensor::<2>::from_data(burn::tensor::TensorData::new(allowed, [t, t]), &device)
        .reshape([1, 1, t, t])
        .expand([b, 1, t, t]);
    let keys = Tensor::cat(
        vec![
            Tensor::ones([b, query_length], &device),
            text_padding.not_equal_elem(0.0).float(),
        ],
        1,
    )
    .reshape([b, 1, 1, t])
    .expand([b, 1, t, t]);
    ((structure * keys).equal_elem(0.0).float()) * f32::MIN
}

/// Multi-head scaled dot-product attention with BERT's `query`/`key`/`value` projections.
#[derive(Module, Debug)]
pub struct MultiHeadAttention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub num_attention_heads: usize,
}

impl MultiHeadAttention {
    /// `hidden` `[B, T, H]` attends over `context` `[B, S, E]` (itself for self-attention),
    /// with an additive `bias` broadcastable to `[B, heads, T, S]` -> `[B, T, H]`.
    pub fn forward(
        &self,
        hidden: Tensor<3>,
        context: Tensor<3>,
        bias: Option<Tensor<4>>,
    ) -> Tensor<3> {
        self.forward_in(hidden, context, bias, Precision::F32)
    }

    /// `forward` with its products in `precision` (the scale, bias and softmax in f32).
    pub fn forward_in(
        &self,
        hidden: Tensor<3>,
        context: Tensor<3>,
        bias: Option<Tensor<4>>,
        precision: Precision,
    ) -> Tensor<3> {
        let [b, t, _] = hidden.dims();
        let s = context.dims()[1];
        let heads = self.num_attention_heads;
        let q = lin(&self.query, hidden, precision);
        let width = q.dims()[2];
        let head = width / heads;
        let split = |y: Tensor<3>, n: usize| y.reshape([b, n, heads, head]).swap_dims(1, 2);
        let q = split(q, t) * (head as f64).powf(-0.5);
        let k = split(lin(&self.key, context.clone(), precision), s);
        let v = split(lin(&self.value, context, precision), s);
        let scores = mm(q, k.swap_dims(2, 3), precision);
        let weights = match bias {
            None => softmax(scores, 3),
            Some(bias) => {
                let [bb, _, bt, bs] = bias.dims();
                // A query with no key to attend to gets a zero context, as PyTorch's
                // `scaled_dot_product_attention` (HF's default) gives; the bias alone would
                // spread it uniformly over the masked keys, as HF's eager path does.
                let open = bias
                    .clone()
                    .greater_elem(f32::MIN / 2.0)
                    .float()
                    .max_dim(3)
                    .expand([bb, heads, bt, s]);
                softmax(scores + bias.expand([bb, heads, bt, bs]), 3) * open
            }
        };
        mm(weights, v, precision)
            .swap_dims(1, 2)
            .reshape([b, t, width])
    }
}

/// `dense`, then `LayerNorm(x + residual)`: HF's `BertSelfOutput` and `BertOutput`.
#[derive(Module, Debug)]
pub struct ResidualOutput {
    pub dense: Linear,
    pub LayerNorm: LayerNorm,
}

impl ResidualOutput {
    /// `[B, T, I]` and the residual `[B, T, H]` -> `[B, T, H]`.
    pub fn forward(&self, x: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        self.forward_in(x, residual, Precision::F32)
    }

    /// `forward` with the product in `precision` (the residual and the norm in f32).
    pub fn forward_in(&self, x: Tensor<3>, residual: Tensor<3>, precision: Precision) -> Tensor<3> {
        self.LayerNorm
            .forward(lin(&self.dense, x, precision) + residual)
    }
}

/// Attention followed by its residual output (HF `BertAttention` / `Blip2QFormerAttention`).
#[derive(Module, Debug)]
pub struct Attention {
    pub attention: MultiHeadAttention,
    pub output: ResidualOutput,
}

impl Attention {
    /// `[B, T, H]` over `context` `[B, S, E]` -> `[B, T, H]`.
    pub fn forward(
        &self,
        hidden: Tensor<3>,
        context: Tensor<3>,
        bias: Option<Tensor<4>>,
    ) -> Tensor<3> {
        self.forward_in(hidden, context, bias, Precision::F32)
    }

    /// `forward` with its products in `precision`.
    pub fn forward_in(
        &self,
        hidden: Tensor<3>,
        context: Tensor<3>,
        bias: Option<Tensor<4>>,
        precision: Precision,
    ) -> Tensor<3> {
        let attended = self
            .attention
            .forward_in(hidden.clone(), context, bias, precision);
        self.output.forward_in(attended, hidden, precision)
    }

    pub(crate) fn init(
        hidden: usize,
        context: usize,
        heads: usize,
        eps: f64,
        device: &Device,
    ) -> Self {
        Self {
            attention: MultiHeadAttention {
                query: bert_linear(hidden, hidden, device),
                key: bert_linear(context, hidden, device),
                value: bert_linear(context, hidden, device),
                num_attention_heads: heads,
            },
            output: ResidualOutput {
                dense: bert_linear(hidden, hidden, device),
                LayerNorm: layer_norm(hidden, eps, device),
            },
        }
    }
}

#[derive(Module, Debug)]
pub struct Intermediate {
    pub dense: Linear,
    #[module(skip)]
    pub act: HiddenAct,
}

impl Intermediate {
    /// `[B, T, H]` -> `[B, T, I]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.forward_in(x, Precision::F32)
    }

    /// `forward` with the product in `precision` (the activation in f32).
    pub fn forward_in(&self, x: Tensor<3>, precision: Precision) -> Tensor<3> {
        self.act.apply(lin(&self.dense, x, precision))
    }
}

/// The feed-forward block: `intermediate` then `output` with its residual.
pub(crate) fn feed_forward(
    intermediate: &Intermediate,
    output: &ResidualOutput,
    x: Tensor<3>,
    precision: Precision,
) -> Tensor<3> {
    output.forward_in(intermediate.forward_in(x.clone(), precision), x, precision)
}

pub(crate) fn init_feed_forward(
    hidden: usize,
    inner: usize,
    act: HiddenAct,
    eps: f64,
    device: &Device,
) -> (Intermediate, ResidualOutput) {
    (
        Intermediate {
            dense: bert_linear(hidden, inner, device),
            act,
        },
        ResidualOutput {
            dense: bert_linear(inner, hidden, device),
            LayerNorm: layer_norm(hidden, eps, device),
        },
    )
}

#[derive(Module, Debug)]
pub struct BertLayer {
    pub attention: Attention,
    pub intermediate: Intermediate,
    pub output: ResidualOutput,
}

#[derive(Module, Debug)]
pub struct BertEncoder {
    pub layer: Vec<BertLayer>,
}

#[derive(Module, Debug)]
pub struct BertEmbeddings {
    pub word_embeddings: Embedding,
    pub position_embeddings: Embedding,
    pub token_type_embeddings: Embedding,
    pub LayerNorm: LayerNorm,
}

#[derive(Module, Debug)]
pub struct BertPooler {
    pub dense: Linear,
}

#[derive(Module, Debug)]
pub struct Bert {
    pub embeddings: BertEmbeddings,
    pub encoder: BertEncoder,
    /// Absent in checkpoints saved without a pooling layer (e.g. `BertForMaskedLM`).
    pub pooler: Option<BertPooler>,
}

#[derive(Debug, Clone)]
pub struct BertOutput {
    /// `[B, T, H]`.
    pub last_hidden_state: Tensor<3>,
    /// `[B, H]`: `tanh(dense(first token))`, when the model has a pooler.
    pub pooler_output: Option<Tensor<2>>,
}

impl Bert {
    /// `input_ids` `[B, T]`; `attention_mask` `[B, T]` (non-zero = real token; absent = all
    /// real); `token_type_ids` `[B, T]` (absent = all 0). T must not exceed
    /// `max_position_embeddings`.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2>>,
        token_type_ids: Option<Tensor<2, Int>>,
    ) -> BertOutput {
        let [b, t] = input_ids.dims();
        let device = input_ids.device();
        let positions = Tensor::<1, Int>::arange(0..t as i64, &device)
            .reshape([1, t])
            .expand([b, t]);
        let types = token_type_ids.unwrap_or_else(|| Tensor::zeros([b, t], &device));
        let e = &self.embeddings;
        let mut x = e.LayerNorm.forward(
            e.word_embeddings.forward(input_ids)
                + e.position_embeddings.forward(positions)
                + e.token_type_embeddings.forward(types),
        );
        let bias = attention_mask.map(padding_bias);
        for layer in &self.encoder.layer {
            let attended = layer.attention.forward(x.clone(), x, bias.clone());
            // The text encoder is frozen and runs outside training's autodiff: always f32.
            x = feed_forward(&layer.intermediate, &layer.output, attended, Precision::F32);
        }
        let pooler_output = self.pooler.as_ref().map(|p| {
            let h = x.dims()[2];
            let first = x.clone().slice([0..b, 0..1, 0..h]).reshape([b, h]);
            p.dense.forward(first).tanh()
        });
        BertOutput {
            last_hidden_state: x,
            pooler_output,
        }
    }
}

impl BertConfig {
    /// How many parameters `init` makes, matrices and embedding tables only: what a
    /// checkpoint must hold for this config to describe it.
    pub fn parameter_count(&self) -> u128 {
        let (h, i) = (self.hidden_size as u128, self.intermediate_size as u128);
        let tables =
            (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) as u128;
        self.num_hidden_layers as u128 * (4 * h * h + 2 * h * i) + tables * h
    }

    /// A randomly initialised BERT (HF's init: N(0, 0.02) weights, zero biases); load real
    /// weights with `crate::io::hf`.
    pub fn init(&self, with_pooler: bool, device: &Device) -> Bert {
        let h = self.hidden_size;
        let eps = self.layer_norm_eps;
        let embedding = |n: usize| {
            EmbeddingConfig::new(n, h)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: 0.02,
                })
                .init(device)
        };
        let layer = (0..self.num_hidden_layers)
            .map(|_| {
                let (intermediate, output) =
                    init_feed_forward(h, self.intermediate_size, self.hidden_act, eps, device);
                BertLayer {
                    attention: Attention::init(h, h, self.num_attention_heads, eps, device),
                    intermediate,
                    output,
                }
            })
            .collect();
        Bert {
            embeddings: BertEmbeddings {
                word_embeddings: embedding(self.vocab_size),
                position_embeddings: embedding(self.max_position_embeddings),
                token_type_embeddings: embedding(self.type_vocab_size),
                LayerNorm: layer_norm(h, eps, device),
            },
            encoder: BertEncoder { layer },
            pooler: with_pooler.then(|| BertPooler {
                dense: bert_linear(h, h, device),
            }),
        }
    }
}

/// The all-MiniLM sentence embedding: the mean of `hidden` `[B, T, H]` over the tokens where
/// `mask` `[B, T]` is non-zero, L2-normalised -> `[B, H]`.
pub fn sentence_embedding(hidden: Tensor<3>, mask: Tensor<2>) -> Tensor<2> {
    let [b, t, h] = hidden.dims();
    let weights = mask.not_equal_elem(0.0).float().reshape([b, t, 1]);
    // Both clamps follow sentence-transformers: an all-padding row gives zeros, not NaN.
    let count = weights.clone().sum_dim(1).reshape([b, 1]).clamp_min(1e-9);
    let mean = (hidden * weights.expand([b, t, h]))
        .sum_dim(1)
        .reshape([b, h])
        / count.expand([b, h]);
    let norm = mean
        .clone()
        .powf_scalar(2.0)
        .sum_dim(1)
        .sqrt()
        .clamp_min(1e-12);
    mean / norm.expand([b, h])
}
