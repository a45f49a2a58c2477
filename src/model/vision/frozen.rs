//! The frozen image encoder of every training configuration. It is not a `Module`, so no
//! optimiser can be given its weights; its weights live without autodiff (`valid()`), and its
//! forward runs on plain tensors, so it records no graph and receives no gradients. Its outputs
//! re-enter the caller's autodiff context as constants.

use burn::module::Module;
use burn::tensor::Tensor;

use super::clip::ClipVision;
use super::efficientnet::EfficientNetLite0;

/// An encoder with its weights loaded.
// One value per run, moved only while loading: boxing the larger variant would save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Encoder {
    EfficientnetLite0(EfficientNetLite0),
    Clip(ClipVision),
}

#[derive(Debug)]
pub struct FrozenEncoder {
    encoder: Encoder,
}

impl FrozenEncoder {
    pub fn new(encoder: Encoder) -> Self {
        let encoder = match encoder {
            Encoder::EfficientnetLite0(m) => Encoder::EfficientnetLite0(m.valid()),
            Encoder::Clip(m) => Encoder::Clip(m.valid()),
        };
        Self { encoder }
    }

    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// `pixel_values` `[B, 3, H, W]` -> one token sequence `[B, T_i, D_i]` per depth: CLIP's
    /// hidden states (embeddings, then each layer), or EfficientNet's stage outputs with their
    /// `H_i x W_i` positions as tokens. The result carries autodiff iff the input did, without
    /// a graph behind it.
    pub fn forward(&self, pixel_values: Tensor<4>) -> Vec<Tensor<3>> {
        let autodiff = pixel_values.is_autodiff();
        let x = pixel_values.without_autodiff();
        let states = match &self.encoder {
            Encoder::Clip(m) => m.forward(x).hidden_states,
            Encoder::EfficientnetLite0(m) => m
                .forward(x)
                .features
                .into_iter()
                .map(|f| {
                    let [b, c, h, w] = f.dims();
                    f.reshape([b, c, h * w]).swap_dims(1, 2)
                })
                .collect(),
        };
        states
            .into_iter()
            .map(|s| if autodiff { s.autodiff() } else { s })
            .collect()
    }
}
