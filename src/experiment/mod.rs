//! One experiment: its configuration tree (`ExperimentConfig`, whose Rust defaults are the
//! built-in default experiment, layered with YAML files and `--set` overrides) and what runs
//! a whole stage from it: pretraining (`pretrain`) and fine-tuning (`finetune`) with their run
//! directories, and finding and loading the runs they leave.

pub mod finetune;
pub mod memory;
pub mod pretrain;

use serde::{Deserialize, Serialize};

use crate::config::{Invalid, Validate};
use crate::data::DataConfig;
use crate::distributed::DistributedConfig;
use crate::eval::protocols::EvalConfig;
use crate::eval::tasks::InferConfig;
use crate::model::ModelConfig;
use crate::train::config::TrainConfig;
use crate::train::finetune::FinetuneConfig;
use crate::train::pretrain::PretrainConfig;

/// Everything a run reads. Each binary uses the sections it needs; unknown keys anywhere are
/// errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Seeds weight initialisation, shuffling and random crops.
    pub seed: u64,
    pub model: ModelConfig,
    pub data: DataConfig,
    pub pretrain: PretrainConfig,
    pub finetune: FinetuneConfig,
    /// How either stage computes: precision, activation checkpointing.
    pub train: TrainConfig,
    pub infer: InferConfig,
    /// What `evaluate task` runs (configs/eval/).
    pub eval: EvalConfig,
    /// Data-parallel training across processes (`mpirun`, `srun`).
    pub distributed: DistributedConfig,
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            model: ModelConfig::default(),
            data: DataConfig::default(),
            pretrain: PretrainConfig::default(),
            finetune: FinetuneConfig::default(),
            train: TrainConfig::default(),
            infer: InferConfig::default(),
            eval: EvalConfig::default(),
            distributed: DistributedConfig::default(),
        }
    }
}

impl Validate for ExperimentConfig {
    fn validate(&self) -> Result<(), Invalid> {
        self.model.validate()?;
        self.data.validate()?;
        self.pretrain.validate()?;
        self.finetune.validate()?;
        self.train.validate()?;
        self.train.validate_against(&self.finetune)?;
        self.infer.validate()?;
        self.eval.validate()?;
        let size = self.model.vision.image_size();
        match self.data.image.resize_shorter {
            Some(shorter) if shorter < size => Err(Invalid::new(
                "data.image.resize_shorter",
                format!("{shorter} is smaller than the encoder's {size}px input, so no crop fits"),
            )),
            Some(shorter) if shorter > 4 * size => Err(Invalid::new(
                "data.image.resize_shorter",
                format!("{shorter} is over 4x the encoder's {size}px input"),
            )),
            _ => Ok(()),
        }
    }
}
