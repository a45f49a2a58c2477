//! The `train:` section: how either training stage computes, beside what it trains on
//! (`pretrain:`, `finetune:`). Neither setting changes what a step means; both trade memory
//! (and, for bf16, the last bits) against time (docs/design.md §3.3).

use serde::{Deserialize, Serialize};

use crate::config::Invalid;
use crate::train::finetune::FinetuneConfig;

/// The arithmetic of the forward's matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// Mixed precision: the matrix products' inputs in bf16 (f32 accumulation where the
    /// backend has it), softmax, norms and the loss in f32; master weights, gradients and
    /// Adam's state stay in f32. Not implemented yet: `inspect memory` plans with it, and the
    /// training commands refuse it.
    Bf16,
}

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
