//! Linear warm-up, then cosine decay, per optimiser step: CALM's schedule (peak 1e-3 in
//! pretraining). The step-by-step values equal transformers'
//! `get_cosine_schedule_with_warmup` (and, with a floor, `get_cosine_with_min_lr_schedule_
//! with_warmup`), the schedule LLaVA and LAVIS runs use; tested against them.

use serde::{Deserialize, Serialize};

/// The most optimiser steps a run may take: far beyond any real run, and small enough that a
/// micro-batch's index (steps x accumulation) times its size never overflows.
pub const MAX_STEPS: usize = 1_000_000_000;
/// The most micro-batches summed into one step.
pub const MAX_ACCUMULATION: usize = 65_536;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    pub peak_lr: f64,
    pub warmup_steps: usize,
    /// The floor of the cosine as a fraction of `peak_lr` (0 decays to zero).
    pub min_lr_ratio: f64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            peak_lr: 1e-3,
            warmup_steps: 10,
            min_lr_ratio: 0.0,
        }
    }
}

impl ScheduleConfig {
    /// The learning rate of step `step` (0-based) of a run of `total_steps` optimiser steps.
    /// Warm-up rises linearly from 0, as transformers' does, so step 0 takes no step.
    pub fn lr_at(&self, step: usize, total_steps: usize) -> f64 {
        let factor = if step < self.warmup_steps {
            step as f64 / self.warmup_steps.max(1) as f64
        } else {
            let span = total_steps.saturating_sub(self.warmup_steps).max(1);
            let progress = (step - self.warmup_steps) as f64 / span as f64;
            let cosine = (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0);
            cosine * (1.0 - self.min_lr_ratio) + self.min_lr_ratio
        };
        self.peak_lr * factor
    }
}
