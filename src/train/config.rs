//! The `train:` section: how either training stage computes, beside what it trains on
//! (`pretrain:`, `finetune:`). Neither setting changes what a step means; both trade memory
//! (and, for bf16, the last bits) against time (docs/design.md §3.3).

use serde::{Deserialize, Serialize};

use crate::config::Invalid;

/// The arithmetic of the forward's matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// Mixed precision: the matrix products' inputs in bf16 (f32 accumulation where the
    /// backend has it), softmax, norms and the loss in f32; master weights, gradients and
    /// Adam's state stay in f32.
    Bf16,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub precision: Precision,
    /// Keep only each transformer layer's input (LLM, Q-Formers) and recompute the layer in
    /// the backward pass: activations shrink from every intermediate of every layer to one
    /// tensor per layer, for about one more forward pass of time. Gradients are unchanged.
    pub activation_checkpointing: bool,
}

impl TrainConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        Ok(())
    }
}
