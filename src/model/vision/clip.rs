//! CLIP vision transformer (Radford et al., 2021), equal to HF `transformers`'
//! `CLIPVisionModel`: patch embedding, class token, position embeddings (bicubic-interpolated
//! for other input sizes, as `interpolate_pos_encoding=True`), `pre_layrnorm`, pre-LN encoder
//! layers, and `post_layernorm` on the class token. Field names are the HF checkpoint keys.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, gelu_approximate, relu, sigmoid, softmax};
use burn::tensor::{Device, Distribution, Tensor, TensorData};

use super::{ClipVisionConfig, HiddenAct};

/// What the encoder returns; `hidden_states[0]` is the embeddings after `pre_layrnorm`, then
/// one entry per layer, as HF's `output_hidden_states=True`.
#[derive(Debug, Clone)]
pub struct ClipVisionOutput {
    /// `[B, 1 + N, D]`, N = number of patches.
    pub last_hidden_state: Tensor<3>,
    /// `[B, D]`: `post_layernorm` of the class token.
    pub pooler_output: Tensor<2>,
    /// `num_hidden_layers + 1` tensors of `[B, 1 + N, D]`.
    pub hidden_states: Vec<Tensor<3>>,
}

#[derive(Module, Debug)]
pub struct ClipVisionEmbeddings {
    pub class_embedding: Param<Tensor<1>>,
    pub patch_embedding: Conv2d,
    pub position_embedding: Embedding,
    pub patch_size: usize,
    /// Patches per side of the checkpoint's square input.
    pub grid: usize,
}

impl ClipVisionEmbeddings {
    /// `[B, C, H, W]` -> `[B, 1 + (H/p)(W/p), D]`. Sizes other than the checkpoint's get
    /// bicubic-interpolated position embeddings.
    pub fn forward(&self, pixel_values: Tensor<4>) -> Tensor<3> {
        let [batch, _, height, width] = pixel_values.dims();
        let patches = self.patch_embedding.forward(pixel_values);
        let [_, dim, gh, gw] = patches.dims();
        let patches = patches.reshape([batch, dim, gh * gw]).swap_dims(1, 2);
        let class = self
            .class_embedding
            .val()
            .reshape([1, 1, dim])
            .expand([batch, 1, dim]);
        let tokens = Tensor::cat(vec![class, patches], 1);
        let positions = self.positions(height / self.patch_size, width / self.patch_size);
        tokens + positions.unsqueeze_dim(0)
    }

    /// `[1 + gh*gw, D]` position embeddings for a `gh` x `gw` patch grid.
    fn positions(&self, gh: usize, gw: usize) -> Tensor<2> {
        let table = self.position_embedding.weight.val();
        if gh == self.grid && gw == self.grid {
            return table;
        }
        let [n, dim] = table.dims();
        let device = table.device();
        let class = table.clone().slice([0..1, 0..dim]);
        // [grid*grid, D] -> [D, grid, grid], resampled along each axis by a weight matrix.
        let grid = table
            .slice([1..n, 0..dim])
            .reshape([self.grid, self.grid, dim])
            .permute([2, 0, 1]);
        let rows = bicubic_matrix(self.grid, gh, &device).unsqueeze_dim::<3>(0);
        let cols = bicubic_matrix(self.grid, gw, &device)
            .transpose()
            .unsqueeze_dim::<3>(0);
        let resized = rows.matmul(grid).matmul(cols);
        let patches = resized.permute([1, 2, 0]).reshape([gh * gw, dim]);
        Tensor::cat(vec![class, patches], 0)
    }
}

/// `[out, in]` weights of PyTorch's bicubic resampling along one axis (`mode="bicubic"`,
/// `align_corners=False`, cubic coefficient A = -0.75, edge indices clamped).
pub fn bicubic_matrix(input: usize, output: usize, device: &Device) -> Tensor<2> {
    const A: f64 = -0.75;
    let near = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let scale = input as f64 / output as f64;
    let mut weights = vec![0f32; output * input];
    for o in 0..output {
        let x = scale * (o as f64 + 0.5) - 0.5;
        let base = x.floor();
        let t = x - base;
        let taps = [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)];
        for (k, w) in taps.iter().enumerate() {
            let i = (base as i64 - 1 + k as i64).clamp(0, input as i64 - 1) as usize;
            weights[o * input + i] += *w as f32;
        }
    }
    Tensor::from_data(TensorData::new(weights, [output, input]), device)
}

#[derive(Module, Debug)]
pub struct ClipAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    pub num_heads: usize,
}

impl ClipAttention {
    /// `[B, T, D]` -> `[B, T, D]`, bidirectional.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, t, d] = x.dims();
        let head = d / self.num_heads;
        let split = |y: Tensor<3>| y.reshape([b, t, self.num_heads, head]).swap_dims(1, 2);
        let q = split(self.q_proj.forward(x.clone())) * (head as f64).powf(-0.5);
        let k = split(self.k_proj.forward(x.clone()));
        let v = split(self.v_proj.forward(x));
        let weights = softmax(q.matmul(k.swap_dims(2, 3)), 3);
        let context = weights.matmul(v).swap_dims(1, 2).reshape([b, t, d]);
        self.out_proj.forward(context)
    }
}

#[derive(Module, Debug)]
pub struct ClipMlp {
    pub fc1: Linear,
    pub fc2: Linear,
    #[module(skip)]
    pub act: HiddenAct,
}

impl ClipMlp {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.fc2.forward(self.act.apply(self.fc1.forward(x)))
    }
}

impl HiddenAct {
    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::QuickGelu => x.clone() * sigmoid(x * 1.702),
            Self::Gelu => gelu(x),
            Self::GeluNew => gelu_approximate(x),
            Self::Relu => relu(x),
        }
    }
}

#[derive(Module, Debug)]
pub struct ClipEncoderLayer {
    pub self_attn: ClipAttention,
    pub layer_norm1: LayerNorm,
    pub mlp: ClipMlp,
    pub layer_norm2: LayerNorm,
}

impl ClipEncoderLayer {
    /// Pre-LN residual block: `[B, T, D]` -> `[B, T, D]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = x.clone() + self.self_attn.forward(self.layer_norm1.forward(x));
        x.clone() + self.mlp.forward(self.layer_norm2.forward(x))
    }
}

#[derive(Module, Debug)]
pub struct ClipEncoder {
    pub layers: Vec<ClipEncoderLayer>,
}

#[derive(Module, Debug)]
pub struct ClipVision {
    pub embeddings: ClipVisionEmbeddings,
    pub pre_layrnorm: LayerNorm,
    pub encoder: ClipEncoder,
    pub post_layernorm: LayerNorm,
}

impl ClipVision {
    /// `pixel_values` `[B, 3, H, W]` (H and W multiples of the patch size) -> every hidden
    /// state, the last one and the pooled class token.
    pub fn forward(&self, pixel_values: Tensor<4>) -> ClipVisionOutput {
        let mut x = self
            .pre_layrnorm
            .forward(self.embeddings.forward(pixel_values));
        let mut hidden_states = Vec::with_capacity(self.encoder.layers.len() + 1);
        for layer in &self.encoder.layers {
            hidden_states.push(x.clone());
            x = layer.forward(x);
        }
        hidden_states.push(x.clone());
        let [b, _, d] = x.dims();
        let class = x.clone().slice([0..b, 0..1, 0..d]).reshape([b, d]);
        ClipVisionOutput {
            pooler_output: self.post_layernorm.forward(class),
            last_hidden_state: x,
            hidden_states,
        }
    }
}

impl ClipVisionConfig {
    /// A randomly initialised encoder; load real weights with `crate::io::hf`.
    pub fn init(&self, device: &Device) -> ClipVision {
        let d = self.hidden_size;
        let norm = || {
            LayerNormConfig::new(d)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let linear = |i: usize, o: usize| LinearConfig::new(i, o).init(device);
        let grid = self.image_size / self.patch_size;
        let layers = (0..self.num_hidden_layers)
            .map(|_| ClipEncoderLayer {
                self_attn: ClipAttention {
                    q_proj: linear(d, d),
                    k_proj: linear(d, d),
                    v_proj: linear(d, d),
                    out_proj: linear(d, d),
                    num_heads: self.num_attention_heads,
                },
                layer_norm1: norm(),
                mlp: ClipMlp {
                    fc1: linear(d, self.intermediate_size),
                    fc2: linear(self.intermediate_size, d),
                    act: self.hidden_act,
                },
                layer_norm2: norm(),
            })
            .collect();
        ClipVision {
            embeddings: ClipVisionEmbeddings {
                class_embedding: Param::from_tensor(Tensor::random(
                    [d],
                    Distribution::Normal(0.0, 1.0),
                    device,
                )),
                patch_embedding: Conv2dConfig::new(
                    [self.num_channels, d],
                    [self.patch_size, self.patch_size],
                )
                .with_stride([self.patch_size, self.patch_size])
                .with_bias(false)
                .init(device),
                position_embedding: EmbeddingConfig::new(grid * grid + 1, d).init(device),
                patch_size: self.patch_size,
                grid,
            },
            pre_layrnorm: norm(),
            encoder: ClipEncoder { layers },
            post_layernorm: norm(),
        }
    }
}
