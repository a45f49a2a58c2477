//! Model components. Nothing here reads files: `crate::io` maps checkpoints onto them.

pub mod bert;
pub mod calm;
pub mod chat;
pub mod generate;
pub mod llama;
pub mod lora;
pub mod mfam;
pub mod pretrain;
pub mod qformer;
pub mod text;
pub mod vision;

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::config::{Invalid, Validate};
pub use bert::BertConfig;
pub use mfam::{Group, LevelConfig, MfamConfig, ProjectorKind, QFormerWeights, ThematicConfig};
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

/// Attention splits `hidden` evenly over `heads`.
pub(crate) fn divisible(
    hidden_key: &str,
    hidden: usize,
    heads_key: &str,
    heads: usize,
) -> Result<(), Invalid> {
    if heads == 0 || hidden % heads != 0 {
        return Err(Invalid::new(
            heads_key,
            format!("{hidden_key} = {hidden} is not divisible by {heads_key} = {heads}"),
        ));
    }
    Ok(())
}

/// `module` with a new id for every parameter. Optimisers key their state and gradients by
/// parameter id, so a module copied from another (a Q-Former from BERT) must not keep the
/// original's ids.
pub(crate) fn fresh_params<M: Module>(module: M) -> M {
    struct Fresh;
    impl ModuleMapper for Fresh {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (_, value, mapper) = param.consume();
            Param::from_mapped_value(ParamId::new(), value, mapper)
        }
    }
    module.map(&mut Fresh)
}
