//! HF `transformers` checkpoints as `save_pretrained` writes them: `config.json` and
//! `model.safetensors`, or shards listed in `model.safetensors.index.json` (read by
//! `checkpoint::Tensors::read_dir`).

use std::path::Path;

use burn::tensor::Device;
use serde::Deserialize;

use super::checkpoint::{CheckpointError, LoadReport, Tensors, apply, read_json};

use crate::model::vision::clip::ClipVision;
use crate::model::{ClipVisionConfig, HiddenAct};

/// HF `CLIPVisionConfig` as written in `config.json`, with HF's defaults for absent keys;
/// other keys are ignored, as transformers does.
#[derive(Debug, Deserialize)]
#[serde(default)]
struct HfClipVision {
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_channels: usize,
    image_size: usize,
    patch_size: usize,
    hidden_act: String,
    layer_norm_eps: f64,
}

impl Default for HfClipVision {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}

/// Reads the vision config of a `CLIPVisionModel` or `CLIPModel` checkpoint directory.
pub fn read_clip_vision_config(dir: &Path) -> Result<ClipVisionConfig, CheckpointError> {
    let path = dir.join("config.json");
    let mut value: serde_json::Value = read_json(&path)?;
    // Other ViT families (SigLIP, EVA, ...) differ in layers and keys: refuse them by name.
    match value.get("model_type").and_then(|t| t.as_str()) {
        None | Some("clip" | "clip_vision_model") => {}
        Some(other) => {
            return Err(CheckpointError::Format {
                path,
                message: format!("model_type `{other}` is not a CLIP checkpoint"),
            });
        }
    }
    if let Some(vision) = value.get_mut("vision_config") {
        value = vision.take();
    }
    let hf: HfClipVision = serde_json::from_value(value).map_err(|e| CheckpointError::Format {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let hidden_act = match hf.hidden_act.as_str() {
        "quick_gelu" => HiddenAct::QuickGelu,
        "gelu" => HiddenAct::Gelu,
        "gelu_new" | "gelu_pytorch_tanh" => HiddenAct::GeluNew,
        "relu" => HiddenAct::Relu,
        other => {
            return Err(CheckpointError::Format {
                path,
                message: format!("unsupported hidden_act `{other}`"),
            });
        }
    };
    Ok(ClipVisionConfig {
        hidden_size: hf.hidden_size,
        intermediate_size: hf.intermediate_size,
        num_hidden_layers: hf.num_hidden_layers,
        num_attention_heads: hf.num_attention_heads,
        num_channels: hf.num_channels,
        image_size: hf.image_size,
        patch_size: hf.patch_size,
        hidden_act,
        layer_norm_eps: hf.layer_norm_eps,
    })
}

/// Loads a CLIP vision encoder from a HF checkpoint directory.
pub fn load_clip_vision(
    dir: &Path,
    device: &Device,
) -> Result<(ClipVision, LoadReport), CheckpointError> {
    let config = read_clip_vision_config(dir)?;
    let (tensors, mut others) = Tensors::read_dir(dir)?.take_prefix("vision_model.");
    let mut model = config.init(device);
    let mut report = apply(&mut model, &tensors, dir)?;
    report.unexpected.append(&mut others);
    report.unexpected.sort();
    Ok((model, report))
}
