//! Model components. Nothing here reads files: `crate::io` maps checkpoints onto them.

pub mod bert;
pub mod calm;
pub mod chat;
pub mod checkpoint;
pub mod generate;
pub mod llama;
pub mod lora;
pub mod mfam;
pub mod precision;
pub mod pretrain;
pub mod qformer;
pub mod qlinear;
pub mod quant;
pub mod score_head;
pub mod text;
pub mod vision;

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::config::{Invalid, Validate};
pub use bert::BertConfig;
pub use mfam::{Group, LevelConfig, MfamConfig, ProjectorKind, QFormerWeights, ThematicConfig};
pub use precision::Precision;
pub use qformer::QFormerConfig;
pub use vision::{ClipVisionConfig, EfficientNetLite0Config, HiddenAct, VisionConfig};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    pub vision: VisionConfig,
    pub mfam: MfamConfig,
    pub llm: LlmConfig,
    pub weights: WeightsConfig,
}

/// How the LLM is prompted; its architecture comes from its checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmConfig {
    /// Replaces the chat template's system prompt; `null` keeps the model's own. The default
    /// is short because every token of it is paid for in every training conversation.
    pub system_prompt: Option<String>,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            system_prompt: Some("You are an expert photography critic.".into()),
        }
    }
}

/// Where the frozen encoders' weights come from.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WeightsConfig {
    /// The image encoder: an HF `CLIPVisionModel` folder, or EfficientNet-Lite0's `.pth` (or a
    /// folder holding it). `null`: the fetched EfficientNet-Lite0 (a CLIP encoder needs a path).
    pub vision: Option<std::path::PathBuf>,
    /// The text encoder of the cues, also the BERT the Q-Formers start from: a
    /// sentence-transformers BERT folder (`config.json`, `model.safetensors`,
    /// `tokenizer.json`). `null`: the fetched all-MiniLM-L6-v2.
    pub text_encoder: Option<std::path::PathBuf>,
    /// The LLM: an HF LLaMA checkpoint folder (with `tokenizer.json`) or a GGUF file.
    /// `null`: the fetched SmolLM2-135M-Instruct.
    pub llm: Option<std::path::PathBuf>,
}

impl Validate for ModelConfig {
    fn validate(&self) -> Result<(), Invalid> {
        let size = self.vision.image_size();
        if !(1..=MAX_IMAGE_SIZE).contains(&size) {
            return Err(Invalid::new(
                "model.vision.image_size",
                format!("{size} is outside 1..={MAX_IMAGE_SIZE}"),
            ));
        }
        if let VisionConfig::Clip(clip) = &self.vision {
            clip.validate("model.vision")?;
            divisible(
                "model.vision.hidden_size",
                clip.hidden_size,
                "model.vision.num_attention_heads",
                clip.num_attention_heads,
            )?;
            if clip.patch_size == 0 || clip.image_size % clip.patch_size != 0 {
                return Err(Invalid::new(
                    "model.vision.image_size",
                    format!(
                        "image_size {} is not a multiple of patch_size {}",
                        clip.image_size, clip.patch_size
                    ),
                ));
            }
        }
        self.mfam.validate_against(&self.vision)
    }
}

/// Largest encoder input side accepted by `validate()`; far above any released encoder.
pub const MAX_IMAGE_SIZE: usize = 4096;

/// Upper bounds on the sizes a config or a checkpoint's header may declare, checked before
/// anything is built (docs/robustness.md). Each is far above any released model of its kind
/// (LLaMA-3-405B: width 16384, feed-forward 53248, 126 layers, 128 heads), so they refuse
/// typos and hostile headers, never a real model.
pub mod limits {
    /// Hidden widths, LLM token width included.
    pub const WIDTH: usize = 65_536;
    pub const INTERMEDIATE: usize = 262_144;
    pub const LAYERS: usize = 1_024;
    pub const HEADS: usize = 1_024;
    pub const VOCAB: usize = 1 << 22;
    pub const POSITIONS: usize = 1 << 24;
    /// Learnable queries of one level (BLIP-2 uses 32).
    pub const QUERY_TOKENS: usize = 4_096;
    /// Parameters of a module built from a config alone (the MFAM, a CLIP encoder described in
    /// YAML): 16 GB in f32, about fifty times CALM's MFAM.
    pub const PARAMETERS: u64 = 4_000_000_000;
}

/// `value` must be within `1..=max`.
pub(crate) fn size_within(key: &str, value: usize, max: usize) -> Result<(), Invalid> {
    if (1..=max).contains(&value) {
        Ok(())
    } else {
        Err(Invalid::new(key, format!("{value} is outside 1..={max}")))
    }
}

/// `value` must be a finite number above 0 (a LayerNorm or RMSNorm epsilon, a rotary base).
pub(crate) fn positive(key: &str, value: f64) -> Result<(), Invalid> {
    if value > 0.0 && value.is_finite() {
        Ok(())
    } else {
        Err(Invalid::new(
            key,
            format!("{value} is not a finite number above 0"),
        ))
    }
}

/// A module of `count` parameters must stay within `limits::PARAMETERS`.
pub(crate) fn parameters_within(key: &str, count: u128) -> Result<(), Invalid> {
    if count <= u128::from(limits::PARAMETERS) {
        Ok(())
    } else {
        Err(Invalid::new(
            key,
            format!(
                "these sizes make about {count} parameters, over the {} a config may describe",
                limits::PARAMETERS
            ),
        ))
    }
}

/// Attention splits `hidden` evenly over `heads`.
pub(crate) fn divisible(
    hidden_key: &str,
    hidden: usize,
    heads_key: &str,
    heads: usize,
) -> Result<(), Invalid> {
    if heads == 0 || !hidden.is_multiple_of(heads) {
        return Err(Invalid::new(
            heads_key,
            format!("{hidden_key} = {hidden} is not divisible by {heads_key} = {heads}"),
        ));
    }
    Ok(())
}

/// `module` with a new id and a tensor of its own for every parameter, for a module copied
/// from another (a Q-Former from BERT, or from the same BERT layer twice).
///
/// Both must be new. Optimisers key their state by parameter id. Autodiff keys gradients by the
/// tensor's graph node, which a clone shares and `require_grad` keeps: three Q-Formers copied
/// from one BERT would register one gradient, the sum of the three, which the first parameter
/// visited takes and the other two never see (docs/robustness.md). `detach` gives
/// the tensor a node of its own and keeps whether it requires a gradient.
pub(crate) fn fresh_params<M: Module>(module: M) -> M {
    struct Fresh;
    impl ModuleMapper for Fresh {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (_, value, mapper) = param.consume();
            Param::from_mapped_value(ParamId::new(), value.detach(), mapper)
        }
    }
    module.map(&mut Fresh)
}
