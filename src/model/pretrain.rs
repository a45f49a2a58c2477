//! The MFAM with the heads its pretraining needs (docs/design.md §2): per level, a projection
//! of the Q-Former outputs into the text encoder's space (BLIP-2's `vision_proj`, for ITC);
//! attribute regressors on the low and middle levels; and a quality head on the visual tokens
//! the LLM will read, which ranks originals above their degraded copies. After pretraining
//! only `mfam` is kept.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{Device, Tensor};

use super::bert::bert_linear;
use super::mfam::{LevelOutput, Mfam, MfamConfig};
use super::precision::Precision;
use super::vision::VisionConfig;

/// Output widths of the heads.
#[derive(Debug, Clone, PartialEq)]
pub struct PretrainHeadsConfig {
    /// The text encoder's embedding width (384 for MiniLM).
    pub text_dim: usize,
    pub low_attributes: usize,
    pub middle_attributes: usize,
}

#[derive(Module, Debug)]
pub struct PretrainModel {
    pub mfam: Mfam,
    pub low_text_proj: Option<Linear>,
    pub middle_text_proj: Option<Linear>,
    pub high_text_proj: Option<Linear>,
    pub low_attributes: Option<Linear>,
    pub middle_attributes: Option<Linear>,
    pub quality: Linear,
}

/// One level's pretraining outputs.
#[derive(Debug, Clone)]
pub struct LevelHeads {
    /// `[B, Q, text_dim]`: the query outputs in the text space.
    pub text_queries: Tensor<3>,
    /// `[B, K]` predicted attributes (low and middle levels).
    pub attributes: Option<Tensor<2>>,
}

#[derive(Debug, Clone)]
pub struct PretrainOutput {
    pub low: Option<LevelHeads>,
    pub middle: Option<LevelHeads>,
    pub high: Option<LevelHeads>,
    /// `[B]`: higher is better.
    pub quality: Tensor<1>,
}

impl PretrainModel {
    pub fn init(
        mfam: Mfam,
        config: &MfamConfig,
        heads: &PretrainHeadsConfig,
        device: &Device,
    ) -> Self {
        let h = config.qformer.hidden_size;
        let proj = |on: bool| on.then(|| bert_linear(h, heads.text_dim, device));
        Self {
            low_text_proj: proj(config.low.enabled),
            middle_text_proj: proj(config.middle.enabled),
            high_text_proj: proj(config.high.enabled),
            low_attributes: config
                .low
                .enabled
                .then(|| bert_linear(h, heads.low_attributes, device)),
            middle_attributes: config
                .middle
                .enabled
                .then(|| bert_linear(h, heads.middle_attributes, device)),
            quality: bert_linear(config.llm_hidden_size, 1, device),
            mfam,
        }
    }

    /// A fresh MFAM with fresh heads, for `vision`'s hidden states.
    pub fn fresh(
        config: &MfamConfig,
        vision: &VisionConfig,
        heads: &PretrainHeadsConfig,
        device: &Device,
    ) -> Self {
        Self::init(config.init(vision, device), config, heads, device)
    }

    /// The model with the MFAM's Q-Former layers checkpointed (`on`) or not.
    pub fn with_activation_checkpointing(mut self, on: bool) -> Self {
        self.mfam = self.mfam.with_activation_checkpointing(on);
        self
    }

    /// The model computing the MFAM's products in `precision` (`model::precision`). The heads
    /// stay f32: they are a few small products beside the Q-Formers, and the contrastive
    /// loss reads them directly.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.mfam = self.mfam.with_precision(precision);
        self
    }

    /// `hidden_states`: the frozen encoder's outputs for B images -> every head's output.
    pub fn forward(&self, hidden_states: &[Tensor<3>]) -> PretrainOutput {
        let out = self.mfam.forward(hidden_states);
        let heads =
            |level: &Option<LevelOutput>, proj: &Option<Linear>, attributes: &Option<Linear>| {
                let level = level.as_ref()?;
                let proj = proj.as_ref()?;
                let [b, _, h] = level.queries.dims();
                Some(LevelHeads {
                    text_queries: proj.forward(level.queries.clone()),
                    attributes: attributes
                        .as_ref()
                        .map(|a| a.forward(level.queries.clone().mean_dim(1).reshape([b, h]))),
                })
            };
        let tokens = out.tokens();
        let [b, _, d] = tokens.dims();
        let quality = self
            .quality
            .forward(tokens.mean_dim(1).reshape([b, d]))
            .reshape([b]);
        PretrainOutput {
            low: heads(&out.low, &self.low_text_proj, &self.low_attributes),
            middle: heads(&out.middle, &self.middle_text_proj, &self.middle_attributes),
            high: heads(&out.high, &self.high_text_proj, &None),
            quality,
        }
    }
}
