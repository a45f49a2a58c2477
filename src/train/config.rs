//! The `train:` section: how either training stage computes, beside what it trains on
//! (`pretrain:`, `finetune:`). Neither setting changes what a step means; both trade memory
//! (and, for bf16, the last bits) against time (docs/design.md §3.3).

use serde::{Deserialize, Serialize};

use crate::config::Invalid;
use crate::train::finetune::FinetuneConfig;

// The enum lives in `model`, which computes with it and must not depend on `train`.
pub use crate::model::precision::Precision;

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub precision: Precision,
    /// Keep only each transformer layer's input (the LLM's decoder layers with their LoRA
    /// adapters, the MFAM's Q-Former layers) and recompute the layer in the backward pass
    /// (`model::checkpoint`): activations shrink from every intermediate of every layer to
    /// one tensor per layer, for about one more forward pass of time. Gradients, losses and
    /// weights are unchanged (to the bit, except where three or more layers read one input).
    /// LoRA dropout is refused with it: the recomputation would draw another mask.
    pub activation_checkpointing: bool,
}

impl TrainConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        Ok(())
    }

    /// What the setting needs of the device that trains: bf16 arithmetic for `bf16`. Checked
    /// where the device is known, before anything is computed, since computing in a dtype the
    /// device lacks gives garbage rather than an error on CubeCL backends.
    pub fn validate_on(&self, device: &burn::tensor::Device) -> Result<(), Invalid> {
        if self.precision.supported_on(device) {
            return Ok(());
        }
        Err(Invalid::new(
            "train.precision",
            format!(
                "{:?} has no bf16 arithmetic (wgpu's WGSL shaders have no bf16 type; CUDA and the CPU backend have it): set train.precision: f32 or train on another device",
                device
            ),
        ))
    }

    /// What the setting needs of the fine-tuning: adapters that do not drop out.
    pub fn validate_against(&self, finetune: &FinetuneConfig) -> Result<(), Invalid> {
        if self.activation_checkpointing && finetune.uses_lora() && finetune.lora.dropout > 0.0 {
            return Err(Invalid::new(
                "train.activation_checkpointing",
                format!(
                    "cannot be used with finetune.lora.dropout = {}: recomputing a layer in the backward pass would draw another dropout mask than its forward, and the gradients would be wrong; set the dropout to 0 or turn checkpointing off",
                    finetune.lora.dropout
                ),
            ));
        }
        Ok(())
    }
}
