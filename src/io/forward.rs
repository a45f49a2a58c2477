//! `inspect forward`: run one component on tensors from a safetensors file and write its
//! outputs, so that anyone can check a checkpoint against a reference implementation.

use std::path::Path;

use burn::tensor::{Device, Tensor};

use super::checkpoint::{CheckpointError, LoadReport, Tensors};
use super::hf::load_clip_vision;
use super::pytorch::load_efficientnet_lite0;
use crate::model::EfficientNetLite0Config;

fn input<const D: usize>(
    inputs: &Tensors,
    key: &str,
    path: &Path,
    device: &Device,
) -> Result<Tensor<D>, CheckpointError> {
    inputs
        .tensor(key, device)
        .ok_or_else(|| CheckpointError::Format {
            path: path.to_path_buf(),
            message: format!("no f32 tensor `{key}` of rank {D}"),
        })
}

fn put<const D: usize>(
    out: &mut Tensors,
    key: &str,
    tensor: Tensor<D>,
    path: &Path,
) -> Result<(), CheckpointError> {
    out.insert(key, tensor)
        .map_err(|message| CheckpointError::Format {
            path: path.to_path_buf(),
            message,
        })
}

/// Reads `pixel_values` `[B, 3, H, W]`; writes `last_hidden_state`, `pooler_output` and
/// `hidden_states.0` .. `hidden_states.L`.
pub fn clip_vision(
    checkpoint: &Path,
    inputs: &Path,
    output: &Path,
    device: &Device,
) -> Result<LoadReport, CheckpointError> {
    let (model, report) = load_clip_vision(checkpoint, device)?;
    let pixels = input::<4>(&Tensors::read(inputs)?, "pixel_values", inputs, device)?;
    let result = model.forward(pixels);
    let mut out = Tensors::default();
    put(
        &mut out,
        "last_hidden_state",
        result.last_hidden_state,
        output,
    )?;
    put(&mut out, "pooler_output", result.pooler_output, output)?;
    for (i, h) in result.hidden_states.into_iter().enumerate() {
        put(&mut out, &format!("hidden_states.{i}"), h, output)?;
    }
    out.write(output)?;
    Ok(report)
}

/// Reads `pixel_values` `[B, 3, H, W]`; writes `logits` and `features.0` .. `features.6`.
pub fn efficientnet_lite0(
    checkpoint: &Path,
    inputs: &Path,
    output: &Path,
    device: &Device,
) -> Result<LoadReport, CheckpointError> {
    let (model, report) =
        load_efficientnet_lite0(checkpoint, &EfficientNetLite0Config::default(), device)?;
    let pixels = input::<4>(&Tensors::read(inputs)?, "pixel_values", inputs, device)?;
    let result = model.forward(pixels);
    let mut out = Tensors::default();
    put(&mut out, "logits", result.logits, output)?;
    for (i, f) in result.features.into_iter().enumerate() {
        put(&mut out, &format!("features.{i}"), f, output)?;
    }
    out.write(output)?;
    Ok(report)
}
