//! The frozen encoders a training run needs, from the paths in `model.weights` or, where none
//! is given, from the fetched real weights (fetching them first when they are missing).

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use super::checkpoint::{CheckpointError, LoadReport};
use super::hf::{load_clip_vision, load_text_encoder, read_clip_vision_config};
use super::models::{FetchedModel, ModelsError, ensure_fetched};
use super::pytorch::load_efficientnet_lite0;
use crate::model::text::TextEncoder;
use crate::model::vision::frozen::{Encoder, FrozenEncoder};
use crate::model::{VisionConfig, WeightsConfig};

#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    #[error(transparent)]
    Models(#[from] ModelsError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(
        "a CLIP image encoder needs its weights: set model.weights.vision to an HF CLIPVisionModel folder"
    )]
    NoClipWeights,
    #[error("{dir}: its config.json describes another encoder than model.vision ({message})")]
    ConfigMismatch { dir: PathBuf, message: String },
}

/// The EfficientNet-Lite0 weights: `model.weights.vision`, or the fetched ImageNet ones.
pub fn efficientnet_lite0_weights(weights: &WeightsConfig) -> Result<PathBuf, EncoderError> {
    match &weights.vision {
        Some(p) => Ok(p.clone()),
        None => Ok(ensure_fetched(FetchedModel::EfficientnetLite0)?),
    }
}

/// The frozen image encoder `vision` describes, with its weights.
pub fn load_image_encoder(
    vision: &VisionConfig,
    weights: &WeightsConfig,
    device: &Device,
) -> Result<(FrozenEncoder, LoadReport), EncoderError> {
    match vision {
        VisionConfig::EfficientnetLite0(config) => {
            let path = efficientnet_lite0_weights(weights)?;
            let (model, report) = load_efficientnet_lite0(&path, config, device)?;
            Ok((
                FrozenEncoder::new(Encoder::EfficientnetLite0(model)),
                report,
            ))
        }
        VisionConfig::Clip(config) => {
            let dir = weights
                .vision
                .as_deref()
                .ok_or(EncoderError::NoClipWeights)?;
            let found = read_clip_vision_config(dir)?;
            // The checkpoint's own image size may differ: positions are interpolated.
            let comparable = crate::model::ClipVisionConfig {
                image_size: config.image_size,
                ..found
            };
            if &comparable != config {
                return Err(EncoderError::ConfigMismatch {
                    dir: dir.to_path_buf(),
                    message: format!("checkpoint {comparable:?}, config {config:?}"),
                });
            }
            let (model, report) = load_clip_vision(dir, device)?;
            Ok((FrozenEncoder::new(Encoder::Clip(model)), report))
        }
    }
}

/// The folder of the text encoder: `model.weights.text_encoder`, or the fetched MiniLM.
pub fn text_encoder_dir(weights: &WeightsConfig) -> Result<PathBuf, EncoderError> {
    match &weights.text_encoder {
        Some(p) => Ok(p.clone()),
        None => Ok(ensure_fetched(FetchedModel::Minilm)?),
    }
}

/// The frozen text encoder of the cues.
pub fn load_cue_encoder(dir: &Path, device: &Device) -> Result<TextEncoder, EncoderError> {
    Ok(load_text_encoder(dir, device)?.0)
}
