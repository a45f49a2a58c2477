//! The BLIP-2 Querying Transformer (Li et al., 2023; LAVIS `blip2_models/Qformer.py`), equal to
//! HF `transformers`' `Blip2QFormerModel`: a LayerNorm on the input embeddings, then BERT
//! layers whose queries self-attend (together with any text tokens that follow them),
//! cross-attend to the image features in every `cross_attention_frequency`-th layer (layer
//! 0 included), and pass through their own feed-forward (`intermediate_query`,
//! `output_query`); text tokens take the text feed-forward (`intermediate`, `output`).
//! Field names are the HF checkpoint keys.

use burn::module::Module;
use burn::nn::LayerNorm;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::bert::{
    Attention, Bert, Intermediate, ResidualOutput, feed_forward, init_feed_forward, layer_norm,
    padding_bias,
};
use super::checkpoint::checkpoint;
use super::precision::Precision;
use super::{HiddenAct, fresh_params};

/// HF `Blip2QFormerConfig` fields (the encoder width is the image encoder's, passed to
/// `init`). The defaults are MiniLM-L6's shape, so that the Q-Formers can start from the real
/// text encoder's weights as BLIP-2 starts from BERT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QFormerConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: HiddenAct,
    pub cross_attention_frequency: usize,
    pub layer_norm_eps: f64,
    /// Whether the layers carry the text feed-forward, needed to run text tokens.
    pub use_qformer_text_input: bool,
}

impl Default for QFormerConfig {
    fn default() -> Self {
        Self {
            hidden_size: 384,
            num_hidden_layers: 6,
            num_attention_heads: 12,
            intermediate_size: 1536,
            hidden_act: HiddenAct::Gelu,
            cross_attention_frequency: 2,
            layer_norm_eps: 1e-12,
            use_qformer_text_input: false,
        }
    }
}

impl QFormerConfig {
    /// Sizes within `model::limits`; `key` is where the config sits.
    pub fn validate(&self, key: &str) -> Result<(), crate::config::Invalid> {
        use crate::model::{limits, positive, size_within};
        let k = |f: &str| format!("{key}.{f}");
        size_within(&k("hidden_size"), self.hidden_size, limits::WIDTH)?;
        size_within(
            &k("num_hidden_layers"),
            self.num_hidden_layers,
            limits::LAYERS,
        )?;
        size_within(
            &k("num_attention_heads"),
            self.num_attention_heads,
            limits::HEADS,
        )?;
        size_within(
            &k("intermediate_size"),
            self.intermediate_size,
            limits::INTERMEDIATE,
        )?;
        positive(&k("layer_norm_eps"), self.layer_norm_eps)
    }

    /// About how many parameters `init(encoder_hidden_size)` makes (matrices only).
    pub fn parameter_count(&self, encoder_hidden_size: usize) -> u128 {
        let (h, i, e) = (
            self.hidden_size as u128,
            self.intermediate_size as u128,
            encoder_hidden_size as u128,
        );
        let layers = self.num_hidden_layers as u128;
        let crossing = layers.div_ceil(self.cross_attention_frequency.max(1) as u128);
        let feed_forwards = if self.use_qformer_text_input { 2 } else { 1 };
        layers * (4 * h * h + feed_forwards * 2 * h * i) + crossing * (2 * h * h + 2 * e * h)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QFormerError {
    #[error(
        "text tokens need the text feed-forward: this Q-Former was built without it (use_qformer_text_input = false)"
    )]
    NoTextFeedForward,
    #[error("query_length {query_length} exceeds the {length} input tokens")]
    QueryLength { query_length: usize, length: usize },
    #[error("cannot initialise the Q-Former from this BERT: {0}")]
    Bert(String),
}

#[derive(Module, Debug)]
pub struct QFormerLayer {
    pub attention: Attention,
    /// Present in layers `0, f, 2f, ...` for `cross_attention_frequency` f.
    pub crossattention: Option<Attention>,
    pub intermediate: Option<Intermediate>,
    pub output: Option<ResidualOutput>,
    pub intermediate_query: Intermediate,
    pub output_query: ResidualOutput,
}

#[derive(Module, Debug)]
pub struct QFormerEncoder {
    pub layer: Vec<QFormerLayer>,
}

#[derive(Module, Debug)]
pub struct QFormer {
    pub layernorm: LayerNorm,
    pub encoder: QFormerEncoder,
    /// Recompute each layer in the backward pass instead of keeping its activations
    /// (`model::checkpoint`). A runtime setting, not a weight.
    #[module(skip)]
    pub activation_checkpointing: bool,
    /// The arithmetic of the layers' products (`with_precision`). A runtime setting, not a
    /// weight.
    #[module(skip)]
    pub precision: Precision,
}

impl QFormer {
    /// The query path: `query_embeds` `[B, Q, H]` cross-attend to `encoder_hidden_states`
    /// `[B, N, E]`; `encoder_attention_mask` `[B, N]` (non-zero = attend) hides padded image
    /// tokens -> `last_hidden_state` `[B, Q, H]`.
    pub fn forward(
        &self,
        query_embeds: Tensor<3>,
        encoder_hidden_states: Tensor<3>,
        encoder_attention_mask: Option<Tensor<2>>,
    ) -> Tensor<3> {
        let q = query_embeds.dims()[1];
        let encoder = (
            encoder_hidden_states,
            encoder_attention_mask.map(padding_bias),
        );
        self.layers(self.layernorm.forward(query_embeds), q, None, Some(encoder))
    }

    /// Queries followed by text: `embeds` `[B, Q + T, H]` with the first `query_length` being
    /// queries; `attention_bias` (e.g. `bert::padding_bias` of a `[B, Q + T]` mask, or
    /// `bert::multimodal_causal_bias` for ITG) is added to the self-attention scores. Only the
    /// queries read the image -> `[B, Q + T, H]`.
    pub fn forward_multimodal(
        &self,
        embeds: Tensor<3>,
        query_length: usize,
        attention_bias: Option<Tensor<4>>,
        encoder_hidden_states: Tensor<3>,
        encoder_attention_mask: Option<Tensor<2>>,
    ) -> Result<Tensor<3>, QFormerError> {
        let length = embeds.dims()[1];
        if query_length > length {
            return Err(QFormerError::QueryLength {
                query_length,
                length,
            });
        }
        if length > query_length && !self.has_text_feed_forward() {
            return Err(QFormerError::NoTextFeedForward);
        }
        let encoder = (
            encoder_hidden_states,
            encoder_attention_mask.map(padding_bias),
        );
        Ok(self.layers(
            self.layernorm.forward(embeds),
            query_length,
            attention_bias,
            Some(encoder),
        ))
    }

    /// Text alone (BLIP-2's unimodal text path for ITC): `[B, T, H]` -> `[B, T, H]`.
    pub fn forward_text(
        &self,
        embeds: Tensor<3>,
        attention_bias: Option<Tensor<4>>,
    ) -> Result<Tensor<3>, QFormerError> {
        if !self.has_text_feed_forward() {
            return Err(QFormerError::NoTextFeedForward);
        }
        Ok(self.layers(self.layernorm.forward(embeds), 0, attention_bias, None))
    }

    /// The image-feature width the cross-attention reads (`None` without cross-attention).
    pub fn encoder_hidden_size(&self) -> Option<usize> {
        self.encoder
            .layer
            .iter()
            .find_map(|l| l.crossattention.as_ref())
            .map(|c| c.attention.key.weight.dims()[0])
    }

    pub fn has_text_feed_forward(&self) -> bool {
        self.encoder
            .layer
            .iter()
            .all(|l| l.intermediate.is_some() && l.output.is_some())
    }

    /// The Q-Former with its layers checkpointed (`on`) or not: gradients stay the same,
    /// activations shrink to the layers' inputs, a layer runs twice.
    pub fn with_activation_checkpointing(mut self, on: bool) -> Self {
        self.activation_checkpointing = on;
        self
    }

    /// The Q-Former computing its layers' products in `precision` (`model::precision`).
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    fn layers(
        &self,
        mut x: Tensor<3>,
        query_length: usize,
        bias: Option<Tensor<4>>,
        encoder: Option<(Tensor<3>, Option<Tensor<4>>)>,
    ) -> Tensor<3> {
        let p = self.precision;
        for layer in &self.encoder.layer {
            let reads_image = layer.crossattention.is_some() && query_length > 0;
            // The precision is a constant of a checkpointed layer, so that the
            // recomputation rounds as the forward did.
            x = match &encoder {
                _ if !self.activation_checkpointing => {
                    qformer_layer(layer, x, query_length, bias.clone(), encoder.clone(), p)
                }
                // The image features are an input of their own: they may be tracked (the
                // MFAM's adapters train), and constants may not.
                Some((states, mask)) if reads_image => checkpoint(
                    layer,
                    &((query_length, p), bias.clone(), mask.clone()),
                    [x, states.clone()],
                    |layer, ((query_length, p), bias, mask), [x, states]| {
                        let encoder = Some((states, mask.clone()));
                        qformer_layer(layer, x, *query_length, bias.clone(), encoder, *p)
                    },
                ),
                _ => checkpoint(
                    layer,
                    &((query_length, p), bias.clone()),
                    [x],
                    |layer, ((query_length, p), bias), [x]| {
                        qformer_layer(layer, x, *query_length, bias.clone(), None, *p)
                    },
                ),
            };
        }
        x
    }
}

/// One Q-Former layer, `x` `[B, Q + T, H]` -> `[B, Q + T, H]`: self-attention over queries
/// and text (`bias` added to its scores), then the first `query_length` tokens cross-attend
/// to `encoder` (states `[B, N, E]`, bias of their mask) where the layer has
/// cross-attention, and each part takes its own feed-forward.
fn qformer_layer(
    layer: &QFormerLayer,
    x: Tensor<3>,
    query_length: usize,
    bias: Option<Tensor<4>>,
    encoder: Option<(Tensor<3>, Option<Tensor<4>>)>,
    precision: Precision,
) -> Tensor<3> {
    let attended = layer.attention.forward_in(x.clone(), x, bias, precision);
    let [b, t, h] = attended.dims();
    let mut parts = Vec::with_capacity(2);
    if query_length > 0 {
        let mut queries = attended.clone().slice([0..b, 0..query_length, 0..h]);
        if let (Some(cross), Some((states, mask))) = (&layer.crossattention, encoder) {
            queries = cross.forward_in(queries, states, mask, precision);
        }
        parts.push(feed_forward(
            &layer.intermediate_query,
            &layer.output_query,
            queries,
            precision,
        ));
    }
    if t > query_length
        && let (Some(intermediate), Some(output)) = (&layer.intermediate, &layer.output)
    {
        let text = attended.slice([0..b, query_length..t, 0..h]);
        parts.push(feed_forward(intermediate, output, text, precision));
    }
    Tensor::cat(parts, 1)
}

impl QFormerConfig {
    /// A freshly initialised Q-Former (BERT's init) whose cross-attention reads features of
    /// width `encoder_hidden_size`.
    pub fn init(&self, encoder_hidden_size: usize, device: &Device) -> QFormer {
        let h = self.hidden_size;
        let eps = self.layer_norm_eps;
        let layer = (0..self.num_hidden_layers)
            .map(|i| {
                let (intermediate_query, output_query) =
                    init_feed_forward(h, self.intermediate_size, self.hidden_act, eps, device);
                let (intermediate, output) = if self.use_qformer_text_input {
                    let (i, o) =
                        init_feed_forward(h, self.intermediate_size, self.hidden_act, eps, device);
                    (Some(i), Some(o))
                } else {
                    (None, None)
                };
                QFormerLayer {
                    attention: Attention::init(h, h, self.num_attention_heads, eps, device),
                    crossattention: self.has_cross_attention(i).then(|| {
                        Attention::init(
                            h,
                            encoder_hidden_size,
                            self.num_attention_heads,
                            eps,
                            device,
                        )
                    }),
                    intermediate,
                    output,
                    intermediate_query,
                    output_query,
                }
            })
            .collect();
        QFormer {
            layernorm: layer_norm(h, eps, device),
            encoder: QFormerEncoder { layer },
            activation_checkpointing: false,
            precision: Precision::F32,
        }
    }

    /// HF's rule: layer `i` cross-attends iff `i % cross_attention_frequency == 0`.
    pub fn has_cross_attention(&self, layer: usize) -> bool {
        self.cross_attention_frequency > 0 && layer.is_multiple_of(self.cross_attention_frequency)
    }

    /// BLIP-2's initialisation from a BERT: self-attention and the text feed-forward from
    /// BERT's first `num_hidden_layers` layers, the query feed-forward a copy of the text
    /// one, the input LayerNorm from BERT's embedding LayerNorm; cross-attention fresh.
    pub fn init_from_bert(
        &self,
        bert: &Bert,
        encoder_hidden_size: usize,
        device: &Device,
    ) -> Result<QFormer, QFormerError> {
        let layers = &bert.encoder.layer;
        let Some(first) = layers.first() else {
            return Err(QFormerError::Bert("it has no layers".into()));
        };
        let hidden = first.attention.output.dense.weight.dims()[1];
        let inner = first.intermediate.dense.weight.dims()[1];
        let heads = first.attention.attention.num_attention_heads;
        let mismatch = |what: &str, ours: usize, theirs: usize| {
            QFormerError::Bert(format!("{what} is {ours} here and {theirs} in BERT"))
        };
        if hidden != self.hidden_size {
            return Err(mismatch("hidden_size", self.hidden_size, hidden));
        }
        if inner != self.intermediate_size {
            return Err(mismatch("intermediate_size", self.intermediate_size, inner));
        }
        if heads != self.num_attention_heads {
            return Err(mismatch(
                "num_attention_heads",
                self.num_attention_heads,
                heads,
            ));
        }
        if self.num_hidden_layers > layers.len() {
            return Err(mismatch(
                "num_hidden_layers",
                self.num_hidden_layers,
                layers.len(),
            ));
        }
        let mut qformer = self.init(encoder_hidden_size, device);
        // Copies get parameter ids of their own: the optimiser keys its state by id, so a
        // shared id would tie the copy to BERT (or the query path to the text path).
        qformer.layernorm = fresh_params(bert.embeddings.LayerNorm.clone());
        for (ours, theirs) in qformer.encoder.layer.iter_mut().zip(layers) {
            ours.attention = fresh_params(theirs.attention.clone());
            ours.intermediate_query = fresh_params(theirs.intermediate.clone());
            ours.output_query = fresh_params(theirs.output.clone());
            if self.use_qformer_text_input {
                ours.intermediate = Some(fresh_params(theirs.intermediate.clone()));
                ours.output = Some(fresh_params(theirs.output.clone()));
            }
        }
        Ok(qformer)
    }
}
