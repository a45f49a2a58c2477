//! LLaMA (Touvron et al., 2023), equal to HF `transformers`' `LlamaForCausalLM`: token
//! embeddings, pre-RMSNorm decoder layers with rotary position embeddings (default, linear and
//! llama3 frequency scaling), grouped-query attention and a SwiGLU MLP, a final RMSNorm and an
//! LM head that may share the embedding matrix. Vicuna-7B (CALM's LLM) and SmolLM2 are this
//! architecture.
//!
//! Field names are HF's checkpoint keys (`model.layers.N.self_attn.q_proj`, ...).

use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::activation::{silu, softmax};
use std::sync::Arc;

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::checkpoint::checkpoint;
use super::lora::{
    AttentionLora, LayerLora, LlamaLora, LoraAdapter, LoraConfig, LoraTarget, MlpLora, adapted,
};
use super::precision::{Precision, lin, mm};
use super::qlinear::{qembedding, qlinear, qlinear_with};
use super::quant::Inputs;
use super::quant::QMatrix;

/// How rotary frequencies are rescaled for contexts longer than training (HF `rope_scaling`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rope_type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RopeScaling {
    /// Position interpolation: every frequency divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3.1: low frequencies divided by `factor`, high ones kept, a smooth ramp between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
}

/// HF `LlamaConfig` fields; the default is SmolLM2-135M (docs/design.md §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    /// Width of one head; `None` = `hidden_size / num_attention_heads`.
    pub head_dim: Option<usize>,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
    pub mlp_bias: bool,
}

impl Default for LlamaConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49152,
            hidden_size: 576,
            intermediate_size: 1536,
            num_hidden_layers: 30,
            num_attention_heads: 9,
            num_key_value_heads: 3,
            head_dim: None,
            max_position_embeddings: 8192,
            rms_norm_eps: 1e-5,
            rope_theta: 100_000.0,
            rope_scaling: None,
            tie_word_embeddings: true,
            attention_bias: false,
            mlp_bias: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlamaError {
    #[error("{0}")]
    Config(String),
}

impl LlamaConfig {
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// The checks HF's own config makes implicitly: heads split evenly, key/value heads divide
    /// query heads, the rotary width is even.
    ///
    /// Beyond HF: every size within `model::limits` and every epsilon, base and factor a
    /// finite positive number, so that a hostile header is refused before anything is built.
    pub fn check(&self) -> Result<(), LlamaError> {
        let fail = |m: String| Err(LlamaError::Config(m));
        use crate::model::{limits, positive, size_within};
        let sizes = [
            ("vocab_size", self.vocab_size, limits::VOCAB),
            ("hidden_size", self.hidden_size, limits::WIDTH),
            (
                "intermediate_size",
                self.intermediate_size,
                limits::INTERMEDIATE,
            ),
            ("num_hidden_layers", self.num_hidden_layers, limits::LAYERS),
            (
                "num_attention_heads",
                self.num_attention_heads,
                limits::HEADS,
            ),
            (
                "num_key_value_heads",
                self.num_key_value_heads,
                limits::HEADS,
            ),
            ("head_dim", self.head_dim.unwrap_or(1), limits::WIDTH),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                limits::POSITIONS,
            ),
        ];
        for (key, value, max) in sizes {
            size_within(key, value, max).map_err(|e| LlamaError::Config(e.to_string()))?;
        }
        let mut numbers = vec![
            ("rms_norm_eps", self.rms_norm_eps),
            ("rope_theta", self.rope_theta),
        ];
        match &self.rope_scaling {
            Some(RopeScaling::Linear { factor }) => numbers.push(("rope_scaling.factor", *factor)),
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) => numbers.extend([
                ("rope_scaling.factor", *factor),
                ("rope_scaling.low_freq_factor", *low_freq_factor),
                ("rope_scaling.high_freq_factor", *high_freq_factor),
                (
                    "rope_scaling.original_max_position_embeddings",
                    *original_max_position_embeddings as f64,
                ),
            ]),
            None => {}
        }
        for (key, value) in numbers {
            positive(key, value).map_err(|e| LlamaError::Config(e.to_string()))?;
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return fail(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return fail(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return fail(format!(
                "head_dim {} is odd; rotary needs pairs",
                self.head_dim()
            ));
        }
        Ok(())
    }

    /// How many parameters `init` makes, matrices only: what a checkpoint must hold for
    /// this config to describe it.
    pub fn parameter_count(&self) -> u128 {
        let (h, i, v) = (
            self.hidden_size as u128,
            self.intermediate_size as u128,
            self.vocab_size as u128,
        );
        let d = self.head_dim() as u128;
        let q = self.num_attention_heads as u128 * d;
        let kv = self.num_key_value_heads as u128 * d;
        let layer = 2 * h * q + 2 * h * kv + 3 * h * i;
        let heads = if self.tie_word_embeddings { 1 } else { 2 };
        self.num_hidden_layers as u128 * layer + heads * v * h
    }

    /// Rotary inverse frequencies, `[head_dim / 2]`, computed in f32 as HF does.
    pub fn inv_freq(&self) -> Vec<f32> {
        let dim = self.head_dim();
        let base = self.rope_theta as f32;
        let plain = (0..dim / 2).map(|i| 1.0 / base.powf((2 * i) as f32 / dim as f32));
        match &self.rope_scaling {
            None => plain.collect(),
            Some(RopeScaling::Linear { factor }) => plain.map(|f| f / *factor as f32).collect(),
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) => {
                let (factor, low, high) = (
                    *factor as f32,
                    *low_freq_factor as f32,
                    *high_freq_factor as f32,
                );
                let old = *original_max_position_embeddings as f32;
                let (low_wavelen, high_wavelen) = (old / low, old / high);
                plain
                    .map(|f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low) / (high - low);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }

    /// Random weights (PyTorch's default initialisation of each layer type).
    pub fn init(&self, device: &Device) -> LlamaForCausalLM {
        let (h, d) = (self.hidden_size, self.head_dim());
        let linear =
            |i: usize, o: usize, bias: bool| LinearConfig::new(i, o).with_bias(bias).init(device);
        let norm = || {
            RmsNormConfig::new(h)
                .with_epsilon(self.rms_norm_eps)
                .init(device)
        };
        let layers = (0..self.num_hidden_layers)
            .map(|_| LlamaDecoderLayer {
                self_attn: LlamaAttention {
                    q_proj: linear(h, self.num_attention_heads * d, self.attention_bias),
                    k_proj: linear(h, self.num_key_value_heads * d, self.attention_bias),
                    v_proj: linear(h, self.num_key_value_heads * d, self.attention_bias),
                    o_proj: linear(self.num_attention_heads * d, h, self.attention_bias),
                    num_heads: self.num_attention_heads,
                    num_key_value_heads: self.num_key_value_heads,
                    head_dim: d,
                },
                mlp: LlamaMlp {
                    gate_proj: linear(h, self.intermediate_size, self.mlp_bias),
                    up_proj: linear(h, self.intermediate_size, self.mlp_bias),
                    down_proj: linear(self.intermediate_size, h, self.mlp_bias),
                },
                input_layernorm: norm(),
                post_attention_layernorm: norm(),
            })
            .collect();
        LlamaForCausalLM {
            model: LlamaModel {
                embed_tokens: EmbeddingConfig::new(self.vocab_size, h).init(device),
                layers,
                norm: norm(),
            },
            lm_head: (!self.tie_word_embeddings).then(|| linear(h, self.vocab_size, false)),
            lora: None,
            inv_freq: self.inv_freq(),
            max_position_embeddings: self.max_position_embeddings,
            activation_checkpointing: false,
            precision: Precision::F32,
            quantized: None,
        }
    }
}

/// The projections of one decoder layer that stay quantised, by HF name; `None` = dense.
#[derive(Debug, Clone, Default)]
pub struct QuantizedLayer {
    pub q_proj: Option<Arc<QMatrix>>,
    pub k_proj: Option<Arc<QMatrix>>,
    pub v_proj: Option<Arc<QMatrix>>,
    pub o_proj: Option<Arc<QMatrix>>,
    pub gate_proj: Option<Arc<QMatrix>>,
    pub up_proj: Option<Arc<QMatrix>>,
    pub down_proj: Option<Arc<QMatrix>>,
}

impl super::checkpoint::Constants for QuantizedLayer {
    fn any_tracked(&self) -> bool {
        false
    }
}

/// The matrices of a LLaMA that stay in their quantised blocks (a GGUF file's), each `[out,
/// in]`: the products read them directly (`model::qlinear`). The module's own parameters for
/// them are lazy and dequantise only if something reads them (a merge, a save).
#[derive(Debug, Clone, Default)]
pub struct QuantizedLlama {
    /// The token table, read row by row.
    pub embed_tokens: Option<Arc<QMatrix>>,
    pub layers: Vec<QuantizedLayer>,
    /// The head; the token table when the embeddings are tied.
    pub lm_head: Option<Arc<QMatrix>>,
}

impl QuantizedLlama {
    /// Bytes of blocks held (a matrix shared by the table and the head counted once).
    pub fn byte_len(&self) -> usize {
        let layer = |l: &QuantizedLayer| {
            [
                &l.q_proj,
                &l.k_proj,
                &l.v_proj,
                &l.o_proj,
                &l.gate_proj,
                &l.up_proj,
                &l.down_proj,
            ]
            .into_iter()
            .flatten()
            .map(|m| m.byte_len())
            .sum::<usize>()
        };
        let head = match (&self.lm_head, &self.embed_tokens) {
            (Some(h), Some(e)) if Arc::ptr_eq(h, e) => 0,
            (Some(h), _) => h.byte_len(),
            _ => 0,
        };
        self.embed_tokens.as_ref().map_or(0, |m| m.byte_len())
            + head
            + self.layers.iter().map(layer).sum::<usize>()
    }
}

/// `base(x)` plus the adapter's addition, reading the weight from `quant` when it has it.
fn project(
    base: &Linear,
    quant: Option<&Arc<QMatrix>>,
    adapter: Option<&LoraAdapter>,
    x: Tensor<3>,
    precision: Precision,
) -> Tensor<3> {
    let Some(y) = quant.and_then(|w| qlinear(x.clone(), w)) else {
        return adapted(base, adapter, x, precision);
    };
    let y = match &base.bias {
        Some(bias) => y + bias.val().unsqueeze(),
        None => y,
    };
    match adapter {
        Some(a) => y + a.forward_in(x, precision),
        None => y,
    }
}

#[derive(Module, Debug)]
pub struct LlamaAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    #[module(skip)]
    pub num_heads: usize,
    #[module(skip)]
    pub num_key_value_heads: usize,
    #[module(skip)]
    pub head_dim: usize,
}

/// Rotates the two halves of the last axis: `[x1, x2] -> [-x2, x1]` (HF's `rotate_half`).
fn rotate_half(x: Tensor<4>) -> Tensor<4> {
    let d = x.dims()[3];
    let x1 = x.clone().narrow(3, 0, d / 2);
    let x2 = x.narrow(3, d / 2, d / 2);
    Tensor::cat(vec![x2.neg(), x1], 3)
}

/// Keys and values of the positions seen so far, per layer: `[B, KV heads, S, head_dim]`.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
}

impl KvCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Positions cached so far.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, |(k, _)| k.dims()[2])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl LlamaAttention {
    /// `x` `[B, T, H]`; `(cos, sin)` `[B, 1, T, head_dim]` each; `bias` `[B, 1, T, S]` with S
    /// the cached plus new positions -> `[B, T, H]`, appending this step's keys and values to
    /// `past`.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        x: Tensor<3>,
        (cos, sin): (&Tensor<4>, &Tensor<4>),
        bias: &Tensor<4>,
        past: &mut Option<(Tensor<4>, Tensor<4>)>,
        lora: Option<&AttentionLora>,
        quant: Option<&QuantizedLayer>,
        precision: Precision,
    ) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let pick = |f: fn(&AttentionLora) -> &Option<LoraAdapter>| lora.and_then(|l| f(l).as_ref());
        let q_of =
            |f: fn(&QuantizedLayer) -> &Option<Arc<QMatrix>>| quant.and_then(|l| f(l).as_ref());
        let (h, kvh, d) = (self.num_heads, self.num_key_value_heads, self.head_dim);
        let heads = |y: Tensor<3>, n: usize| y.reshape([b, t, n, d]).swap_dims(1, 2);
        let rope = |y: Tensor<4>| y.clone() * cos.clone() + rotate_half(y) * sin.clone();
        let q = rope(heads(
            project(
                &self.q_proj,
                q_of(|l| &l.q_proj),
                pick(|l| &l.q_proj),
                x.clone(),
                precision,
            ),
            h,
        ));
        let mut k = rope(heads(
            project(
                &self.k_proj,
                q_of(|l| &l.k_proj),
                pick(|l| &l.k_proj),
                x.clone(),
                precision,
            ),
            kvh,
        ));
        let mut v = heads(
            project(
                &self.v_proj,
                q_of(|l| &l.v_proj),
                pick(|l| &l.v_proj),
                x,
                precision,
            ),
            kvh,
        );
        if let Some((pk, pv)) = past.take() {
            k = Tensor::cat(vec![pk, k], 2);
            v = Tensor::cat(vec![pv, v], 2);
        }
        *past = Some((k.clone(), v.clone()));
        let s = k.dims()[2];
        // Grouped-query attention: each key/value head serves h / kvh query heads.
        let repeat = |y: Tensor<4>| {
            y.reshape([b, kvh, 1, s, d])
                .repeat_dim(2, h / kvh)
                .reshape([b, h, s, d])
        };
        // The scale and the bias stay f32: the bias holds f32::MIN, -inf in bf16.
        let scores = mm(q, repeat(k).swap_dims(2, 3), precision) / (d as f64).sqrt() + bias.clone();
        let context = mm(softmax(scores, 3), repeat(v), precision);
        project(
            &self.o_proj,
            q_of(|l| &l.o_proj),
            pick(|l| &l.o_proj),
            context.swap_dims(1, 2).reshape([b, t, h * d]),
            precision,
        )
    }
}

#[derive(Module, Debug)]
pub struct LlamaMlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

impl LlamaMlp {
    /// SwiGLU: `down(silu(gate(x)) * up(x))`, `[B, T, H] -> [B, T, H]`, each projection
    /// with its adapter when `lora` has one.
    pub fn forward(&self, x: Tensor<3>, lora: Option<&MlpLora>) -> Tensor<3> {
        self.forward_in(x, lora, Precision::F32)
    }

    /// `forward` with its products in `precision` (`silu` and the product of the two
    /// branches in f32).
    pub fn forward_in(
        &self,
        x: Tensor<3>,
        lora: Option<&MlpLora>,
        precision: Precision,
    ) -> Tensor<3> {
        self.forward_quantized(x, lora, None, precision)
    }

    /// `forward_in` reading the projections `quant` holds from their blocks.
    fn forward_quantized(
        &self,
        x: Tensor<3>,
        lora: Option<&MlpLora>,
        quant: Option<&QuantizedLayer>,
        precision: Precision,
    ) -> Tensor<3> {
        let pick = |f: fn(&MlpLora) -> &Option<LoraAdapter>| lora.and_then(|l| f(l).as_ref());
        let q_of =
            |f: fn(&QuantizedLayer) -> &Option<Arc<QMatrix>>| quant.and_then(|l| f(l).as_ref());
        let gate = project(
            &self.gate_proj,
            q_of(|l| &l.gate_proj),
            pick(|l| &l.gate_proj),
            x.clone(),
            precision,
        );
        let up = project(
            &self.up_proj,
            q_of(|l| &l.up_proj),
            pick(|l| &l.up_proj),
            x,
            precision,
        );
        project(
            &self.down_proj,
            q_of(|l| &l.down_proj),
            pick(|l| &l.down_proj),
            silu(gate) * up,
            precision,
        )
    }
}

#[derive(Module, Debug)]
pub struct LlamaDecoderLayer {
    pub self_attn: LlamaAttention,
    pub mlp: LlamaMlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

#[derive(Module, Debug)]
pub struct LlamaModel {
    pub embed_tokens: Embedding,
    pub layers: Vec<LlamaDecoderLayer>,
    pub norm: RmsNorm,
}

#[derive(Module, Debug)]
pub struct LlamaForCausalLM {
    pub model: LlamaModel,
    /// `None` when the head shares `embed_tokens` (`tie_word_embeddings`).
    pub lm_head: Option<Linear>,
    /// LoRA adapters, when fine-tuning with them (`with_lora`).
    pub lora: Option<LlamaLora>,
    #[module(skip)]
    pub inv_freq: Vec<f32>,
    /// `max_position_embeddings`: generation refuses prompts longer than this and stops
    /// there, as llama.cpp does when its context is full.
    #[module(skip)]
    pub max_position_embeddings: usize,
    /// Recompute each decoder layer in the backward pass instead of keeping its activations
    /// (`model::checkpoint`), in forwards without a KV cache. A runtime setting, not a weight.
    #[module(skip)]
    pub activation_checkpointing: bool,
    /// The arithmetic of the decoder's and the head's products (`with_precision`). A runtime
    /// setting, not a weight: the weights stay f32.
    #[module(skip)]
    pub precision: Precision,
    /// The matrices read from quantised blocks (`with_quantized`); `None` = all dense.
    #[module(skip)]
    pub quantized: Option<Arc<QuantizedLlama>>,
}

/// Additive attention bias `[B, 1, T, S]` for T new positions after `past` cached ones:
/// causal (query `past + i` sees keys `<= past + i`) and, with `attention_mask` `[B, S]`
/// (non-zero = a real token), padding. Blocked entries get the most negative f32, as HF.
pub fn causal_bias(
    batch: usize,
    t: usize,
    past: usize,
    attention_mask: Option<&Tensor<2>>,
    device: &Device,
) -> Tensor<4> {
    let s = past + t;
    let causal: Vec<f32> = (0..t)
        .flat_map(|i| (0..s).map(move |j| if j <= past + i { 0.0 } else { f32::MIN }))
        .collect();
    let causal = Tensor::<2>::from_data(TensorData::new(causal, [t, s]), device)
        .reshape([1, 1, t, s])
        .repeat_dim(0, batch);
    match attention_mask {
        None => causal,
        Some(mask) => {
            let blocked = mask
                .clone()
                .equal_elem(0.0)
                .float()
                .reshape([batch, 1, 1, s]);
            // Adding two f32::MIN would overflow to -inf; clamp keeps the bias finite.
            (causal + blocked * f32::MIN).clamp_min(f32::MIN)
        }
    }
}

/// One pre-norm decoder layer, `x` `[B, T, H]` -> `[B, T, H]`: self-attention (appending
/// to `past`) and the MLP, each added to its input, each projection with its adapter when
/// `lora` has one.
#[allow(clippy::too_many_arguments)]
fn decoder_layer(
    layer: &LlamaDecoderLayer,
    lora: Option<&LayerLora>,
    quant: Option<&QuantizedLayer>,
    x: Tensor<3>,
    rope: (&Tensor<4>, &Tensor<4>),
    bias: &Tensor<4>,
    past: &mut Option<(Tensor<4>, Tensor<4>)>,
    precision: Precision,
) -> Tensor<3> {
    let attended = layer.self_attn.forward(
        layer.input_layernorm.forward(x.clone()),
        rope,
        bias,
        past,
        lora.map(|l| &l.self_attn),
        quant,
        precision,
    );
    let x = x + attended;
    let normed = layer.post_attention_layernorm.forward(x.clone());
    x + layer
        .mlp
        .forward_quantized(normed, lora.map(|l| &l.mlp), quant, precision)
}

impl LlamaForCausalLM {
    /// `input_ids` `[B, T]` -> token embeddings `[B, T, H]`.
    pub fn embed(&self, input_ids: Tensor<2, Int>) -> Tensor<3> {
        let Some(table) = self
            .quantized
            .as_ref()
            .and_then(|q| q.embed_tokens.as_ref())
        else {
            return self.model.embed_tokens.forward(input_ids);
        };
        let [b, t] = input_ids.dims();
        let ids = input_ids
            .into_data()
            .convert::<i64>()
            .try_into_vec::<i64>()
            .unwrap_or_else(|e| unreachable!("i64 data read as i64: {e:?}"));
        qembedding(&ids, [b, t], table, &self.device())
    }

    /// The ids of the parameters that stand for quantised matrices (lazy dequantisations
    /// that nothing on the way of a forward reads).
    pub fn quantized_param_ids(&self) -> std::collections::HashSet<burn::module::ParamId> {
        let mut ids = std::collections::HashSet::new();
        let Some(q) = &self.quantized else {
            return ids;
        };
        for (layer, ql) in self.model.layers.iter().zip(&q.layers) {
            let (a, m) = (&layer.self_attn, &layer.mlp);
            for (linear, held) in [
                (&a.q_proj, &ql.q_proj),
                (&a.k_proj, &ql.k_proj),
                (&a.v_proj, &ql.v_proj),
                (&a.o_proj, &ql.o_proj),
                (&m.gate_proj, &ql.gate_proj),
                (&m.up_proj, &ql.up_proj),
                (&m.down_proj, &ql.down_proj),
            ] {
                if held.is_some() {
                    ids.insert(linear.weight.id);
                }
            }
        }
        if q.embed_tokens.is_some() {
            ids.insert(self.model.embed_tokens.weight.id);
        }
        if let (Some(head), Some(_)) = (&self.lm_head, &q.lm_head) {
            ids.insert(head.weight.id);
        }
        ids
    }

    /// The width of the token embeddings, without reading (or dequantising) the table.
    pub fn hidden_size(&self) -> usize {
        self.model.embed_tokens.weight.lazy_shape().dims::<2>()[1]
    }

    /// Where the model's parameters live, without reading (or dequantising) any.
    pub fn device(&self) -> Device {
        self.model.embed_tokens.weight.lazy_device()
    }

    /// `input_ids` `[B, T]`, optional `attention_mask` `[B, T]` -> logits `[B, T, vocab]`.
    /// Positions are `0..T` for every row, as HF's forward without `position_ids`.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2>>,
    ) -> Tensor<3> {
        self.forward_embeds(self.embed(input_ids), attention_mask, None, None)
    }

    /// The decoder on embeddings `[B, T, H]` (token embeddings with visual tokens spliced in)
    /// -> logits `[B, T, vocab]`.
    ///
    /// - `attention_mask` `[B, past + T]`: non-zero for real tokens, over the cached positions
    ///   too; `None` = all real.
    /// - `position_ids` `[B, T]`: rotary positions; `None` = `past..past + T` for every row
    ///   (left-padded batches pass their own, counting real tokens only).
    /// - `cache`: keys and values of earlier calls, extended by this one.
    pub fn forward_embeds(
        &self,
        embeds: Tensor<3>,
        attention_mask: Option<Tensor<2>>,
        position_ids: Option<Tensor<2, Int>>,
        cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        self.logits(self.hidden_states(embeds, attention_mask, position_ids, cache))
    }

    /// As `forward_embeds`, stopping at the final norm: `[B, T, H]`. Training and readouts
    /// need logits at a few positions only, and the head is the largest matmul of a small
    /// model.
    pub fn hidden_states(
        &self,
        embeds: Tensor<3>,
        attention_mask: Option<Tensor<2>>,
        position_ids: Option<Tensor<2, Int>>,
        cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let [b, t, _] = embeds.dims();
        let device = embeds.device();
        let past = cache.as_ref().map_or(0, |c| c.len());
        let positions = position_ids.unwrap_or_else(|| {
            Tensor::<1, Int>::arange(past as i64..(past + t) as i64, &device)
                .reshape([1, t])
                .repeat_dim(0, b)
        });
        let bias = causal_bias(b, t, past, attention_mask.as_ref(), &device);
        self.decode(embeds, bias, positions, cache)
    }

    /// As `hidden_states` without a cache, for rows whose tokens do not simply see every
    /// earlier one (packed conversations): `bias` `[B, 1, T, T]` is added to the attention
    /// scores (0 = seen, `f32::MIN` = hidden), `position_ids` `[B, T]` are the rotary
    /// positions -> `[B, T, H]`.
    pub fn hidden_states_with_bias(
        &self,
        embeds: Tensor<3>,
        bias: Tensor<4>,
        position_ids: Tensor<2, Int>,
    ) -> Tensor<3> {
        self.decode(embeds, bias, position_ids, None)
    }

    /// The decoder layers and the final norm; `cache`, when given, is read and extended (a
    /// forward without one may checkpoint its layers, which then keep no keys or values).
    fn decode(
        &self,
        embeds: Tensor<3>,
        bias: Tensor<4>,
        positions: Tensor<2, Int>,
        cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let [b, t, _] = embeds.dims();
        let device = embeds.device();
        let checkpointing = self.activation_checkpointing && cache.is_none();
        let mut scratch = KvCache::new();
        let cache = cache.unwrap_or(&mut scratch);
        cache.layers.resize(self.model.layers.len(), None);
        let half = self.inv_freq.len();
        let inv_freq =
            Tensor::<1>::from_data(TensorData::new(self.inv_freq.clone(), [half]), &device)
                .reshape([1, 1, half]);
        let freqs = positions.float().reshape([b, t, 1]) * inv_freq;
        let emb = Tensor::cat(vec![freqs.clone(), freqs], 2).reshape([b, 1, t, 2 * half]);
        let (cos, sin) = (emb.clone().cos(), emb.sin());
        let mut x = embeds;
        for (i, (layer, past_kv)) in self
            .model
            .layers
            .iter()
            .zip(cache.layers.iter_mut())
            .enumerate()
        {
            let lora = self.lora.as_ref().and_then(|l| l.layers.get(i));
            let quant = self.quantized.as_ref().and_then(|q| q.layers.get(i));
            // An adapter that drops out would draw another mask when recomputed.
            x = if checkpointing && lora.is_none_or(|l| !l.drops_out()) {
                // The precision is a constant of the node, so that the recomputation rounds
                // as the forward did.
                checkpoint(
                    &(layer.clone(), lora.cloned()),
                    &(
                        ((cos.clone(), sin.clone()), bias.clone(), self.precision),
                        quant.cloned(),
                    ),
                    [x],
                    |(layer, lora), (((cos, sin), bias, precision), quant), [x]| {
                        decoder_layer(
                            layer,
                            lora.as_ref(),
                            quant.as_ref(),
                            x,
                            (cos, sin),
                            bias,
                            &mut None,
                            *precision,
                        )
                    },
                )
            } else {
                decoder_layer(
                    layer,
                    lora,
                    quant,
                    x,
                    (&cos, &sin),
                    &bias,
                    past_kv,
                    self.precision,
                )
            };
        }
        self.model.norm.forward(x)
    }

    /// The LM head: hidden states `[B, T, H]` -> logits `[B, T, vocab]`.
    pub fn logits(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, t, _] = x.dims();
        // The head's input stays f32: rounding it to 8 bits moves logits by about 0.1, enough
        // to flip a near tie ("What is the capital of France?" then starts in French).
        let quantized = self.quantized.as_ref().and_then(|q| q.lm_head.as_ref());
        if let Some(y) = quantized.and_then(|w| qlinear_with(x.clone(), w, Inputs::F32)) {
            return y;
        }
        match &self.lm_head {
            Some(head) => lin(head, x, self.precision),
            None => {
                let w = self.model.embed_tokens.weight.val();
                let [v, h] = w.dims();
                mm(x.reshape([b * t, h]), w.transpose(), self.precision).reshape([b, t, v])
            }
        }
    }
}

impl LlamaForCausalLM {
    /// The model with its decoder layers checkpointed (`on`) or not in forwards without a KV
    /// cache: gradients stay the same, activations shrink to one tensor per layer, a layer
    /// runs twice. Layers whose adapters drop out are never checkpointed.
    pub fn with_activation_checkpointing(mut self, on: bool) -> Self {
        self.activation_checkpointing = on;
        self
    }

    /// The model computing its products in `precision` (`model::precision`); its weights,
    /// and what else it computes, stay f32.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// The model with fresh adapters on `config.target_modules` of every layer and its base
    /// weights frozen: only the adapters receive gradients.
    pub fn with_lora(self, config: &LoraConfig, device: &Device) -> Self {
        let mut model = self.no_grad();
        let wants = |t: LoraTarget| config.target_modules.contains(&t);
        let adapter = |t: LoraTarget, base: &Linear| {
            // The shape without reading the weight, which may be a lazy dequantisation.
            let [input, output] = base.weight.lazy_shape().dims::<2>();
            wants(t).then(|| LoraAdapter::init(config, input, output, device))
        };
        let layers = model
            .model
            .layers
            .iter()
            .map(|l| LayerLora {
                self_attn: AttentionLora {
                    q_proj: adapter(LoraTarget::QProj, &l.self_attn.q_proj),
                    k_proj: adapter(LoraTarget::KProj, &l.self_attn.k_proj),
                    v_proj: adapter(LoraTarget::VProj, &l.self_attn.v_proj),
                    o_proj: adapter(LoraTarget::OProj, &l.self_attn.o_proj),
                },
                mlp: MlpLora {
                    gate_proj: adapter(LoraTarget::GateProj, &l.mlp.gate_proj),
                    up_proj: adapter(LoraTarget::UpProj, &l.mlp.up_proj),
                    down_proj: adapter(LoraTarget::DownProj, &l.mlp.down_proj),
                },
            })
            .collect();
        model.lora = Some(LlamaLora { layers });
        model
    }

    /// The model with every adapter folded into its base weight, and no adapters left.
    pub fn merged(&self) -> Self {
        let mut model = self.clone();
        let Some(lora) = model.lora.take() else {
            return model;
        };
        let device = model.device();
        let mut quantized = model.quantized.take().map(|q| (*q).clone());
        // A folded projection is dense from now on: its blocks no longer hold its weight. Its
        // lazy weight shares its state with the original model's, so reading it would leave an
        // f32 copy there too: the copy gets a dense weight of its own from the blocks.
        let fold = |base: &mut Linear,
                    held: Option<&mut Option<Arc<QMatrix>>>,
                    adapter: &Option<LoraAdapter>| {
            let Some(a) = adapter else {
                return;
            };
            if let Some(w) = held.and_then(Option::take) {
                let dense = Tensor::<2>::from_data(
                    TensorData::new(w.dequantize(), [w.rows, w.cols]),
                    &device,
                );
                base.weight = Param::from_tensor(dense.transpose());
            }
            *base = a.merge_into(base);
        };
        for (i, (layer, l)) in model.model.layers.iter_mut().zip(&lora.layers).enumerate() {
            let mut q = quantized.as_mut().and_then(|q| q.layers.get_mut(i));
            let (attn, mlp) = (&mut layer.self_attn, &mut layer.mlp);
            fold(
                &mut attn.q_proj,
                q.as_deref_mut().map(|q| &mut q.q_proj),
                &l.self_attn.q_proj,
            );
            fold(
                &mut attn.k_proj,
                q.as_deref_mut().map(|q| &mut q.k_proj),
                &l.self_attn.k_proj,
            );
            fold(
                &mut attn.v_proj,
                q.as_deref_mut().map(|q| &mut q.v_proj),
                &l.self_attn.v_proj,
            );
            fold(
                &mut attn.o_proj,
                q.as_deref_mut().map(|q| &mut q.o_proj),
                &l.self_attn.o_proj,
            );
            fold(
                &mut mlp.gate_proj,
                q.as_deref_mut().map(|q| &mut q.gate_proj),
                &l.mlp.gate_proj,
            );
            fold(
                &mut mlp.up_proj,
                q.as_deref_mut().map(|q| &mut q.up_proj),
                &l.mlp.up_proj,
            );
            fold(
                &mut mlp.down_proj,
                q.map(|q| &mut q.down_proj),
                &l.mlp.down_proj,
            );
        }
        model.quantized = quantized.map(Arc::new);
        model
    }
}
