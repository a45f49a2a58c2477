//! Stage 2 of CALM: instruction tuning (DESIGN.md section 2). The pretrained MFAM's visual
//! tokens go into the LLM in place of each `<image>`; stages, each with its data mix,
//! learning-rate schedule and trainable parts (MFAM, projector, LLM full or LoRA; the image
//! encoder is always frozen), run one after another. The loop is `pretrain`'s: Adam or AdamW,
//! warm-up then cosine per stage, gradient accumulation, global-norm clipping, a loader
//! thread, atomic checkpoints and an exact `--resume` (every micro-batch is a function of the
//! seed and its index; parameter ids are numbered).
//!
//! Checkpoints hold the trained parameters only: a frozen LLM base (540 MB for SmolLM2-135M
//! in f32, 27 GB for Vicuna-7B) is read again from its own file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::checkpoints::{self, TrainCheckpointError};
use super::instruct_batch::{PrepareError, PreparedBatch, Preparer};
use super::metrics::{self, MetricsError, StepLine};
use super::optim::{
    OptimizerConfig, clip_global_norm, global_grad_norm, move_grads, numbered_params,
};
use super::pretrain::{self, Frozen, PretrainError, PretrainedRun};
use super::progress::Progress;
use super::projector_init::{
    FitError, ProjectorInitConfig, ProjectorInitKind, fit_level_projections,
};
use super::schedule::ScheduleConfig;
use super::tensorboard::{EventError, EventWriter};
use crate::config::{ExperimentConfig, Invalid};
use crate::data::loader::mix;
use crate::data::raters::SimulatedRaters;
use crate::data::selfsup_instruct::{SelfSupervisedConfig, SelfSupervisedTasks};
use crate::data::tasks::{Mix, MixEntry, TaskBuilder, TaskSourceConfig, build_task, validate_mix};
use crate::data::{BadImagePolicy, DataError};
use crate::io::checkpoint::CheckpointError;
use crate::io::llama::load_chat_model;
use crate::io::models::{FetchedModel, ModelsError, ensure_fetched};
use crate::model::calm::Calm;
use crate::model::chat::{ChatTemplate, LlmTokenizer};
use crate::model::lora::LoraConfig;
use crate::model::mfam::Mfam;
use crate::model::score_head::ScoreHead;
use crate::model::vision::frozen::FrozenEncoder;

pub const METRICS: &str = "metrics.jsonl";
pub const EVENTS: &str = "events";
pub const FINAL_MODEL: &str = "model.safetensors";
pub const SUMMARY: &str = "summary.json";
/// Where a fine-tuning run records the pretraining run it started from.
pub const PRETRAINED: &str = "pretrained.json";

/// How the LLM trains in a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LlmTraining {
    Frozen,
    Full,
    Lora,
}

/// What a stage trains. The image encoder is always frozen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Trainable {
    /// The Q-Formers, their query tokens and adapters.
    pub mfam: bool,
    /// The projections into the LLM's width (each level's and the thematic branch's).
    pub projector: bool,
    pub llm: LlmTraining,
}

impl Default for Trainable {
    fn default() -> Self {
        Self {
            mfam: true,
            projector: true,
            llm: LlmTraining::Lora,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StageConfig {
    pub name: String,
    /// Optimiser steps of this stage.
    pub steps: usize,
    pub schedule: ScheduleConfig,
    pub mix: Vec<MixEntry>,
    pub trainable: Trainable,
    /// The Q-Formers' learning rate as a share of the schedule's (when `trainable.mfam`): a
    /// pretrained MFAM needs a gentler step than the freshly initialised projections.
    pub mfam_lr_scale: f64,
}

impl Default for StageConfig {
    /// The built-in stage: the sample photos' self-supervised instructions.
    fn default() -> Self {
        Self {
            name: "self_supervised".into(),
            steps: 130,
            schedule: ScheduleConfig {
                peak_lr: 2e-3,
                warmup_steps: 12,
                min_lr_ratio: 0.0,
            },
            // Simulated raters (`simulated_raters`) are left out: one conversation in ten of
            // theirs made the job 70% slower and did not teach it to follow a rater (the
            // seed-42 run's SRCC with the rater's taste fell from 0.10 to -0.10; docs/
            // measurements.md).
            mix: vec![MixEntry {
                task: TaskSourceConfig::SelfSupervised(SelfSupervisedConfig::default()),
                ratio: 1.0,
            }],
            // The pretrained MFAM stays as it is: at this learning rate Adam would wash out
            // its features within a few dozen steps (measured: every held-out photo then got
            // the same answer). The projections start from scratch and LoRA adapts the LLM.
            trainable: Trainable {
                mfam: false,
                projector: true,
                llm: LlmTraining::Lora,
            },
            mfam_lr_scale: 1.0,
        }
    }
}

/// The `finetune:` section. Conversations per micro-batch are `batch_size`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FinetuneConfig {
    /// The `pretrain` run the MFAM starts from; `null`: the newest finished run under
    /// `runs/pretrain` made with this config's pretraining settings, made first if none is.
    pub pretrained: Option<PathBuf>,
    pub stages: Vec<StageConfig>,
    pub batch_size: usize,
    pub gradient_accumulation: usize,
    /// Tokens per conversation, visual tokens included; longer ones lose their end.
    pub max_length: usize,
    pub optimizer: OptimizerConfig,
    pub max_grad_norm: Option<f64>,
    pub checkpoint_every: usize,
    pub keep_checkpoints: usize,
    /// The adapters of stages that train the LLM with LoRA.
    pub lora: LoraConfig,
    /// How the level projections start (`train::projector_init`).
    pub projector_init: ProjectorInitConfig,
    /// The score readouts trained beside the words (`model::score_head`).
    pub score_heads: ScoreHeadsConfig,
}

/// The weights of the score heads' losses in a step's loss, beside the mean cross-entropy
/// of its tokens. Both 0: the model has no heads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScoreHeadsConfig {
    /// NIMA's EMD between the 10-bin distribution and the target's.
    pub distribution_weight: f64,
    /// The regression's squared error, on scores standardised to -1..1.
    pub regression_weight: f64,
    /// Whether the heads' losses reach the model under them (LoRA, projections, MFAM), as in
    /// ROC4MLLM, or train the heads alone on its hidden states. Within the built-in job's
    /// budget, reaching the model cost the words more than it gave the heads (README).
    pub train_model: bool,
}

impl Default for ScoreHeadsConfig {
    fn default() -> Self {
        Self {
            distribution_weight: 1.0,
            regression_weight: 1.0,
            train_model: false,
        }
    }
}

impl ScoreHeadsConfig {
    pub fn enabled(&self) -> bool {
        self.distribution_weight > 0.0 || self.regression_weight > 0.0
    }
}

impl Default for FinetuneConfig {
    /// Sized for the built-in job: SmolLM2-135M on a 2-core CPU within 15 minutes.
    fn default() -> Self {
        Self {
            pretrained: None,
            stages: vec![StageConfig::default()],
            batch_size: 8,
            gradient_accumulation: 1,
            max_length: 512,
            optimizer: OptimizerConfig::default(),
            max_grad_norm: Some(1.0),
            checkpoint_every: 40,
            keep_checkpoints: 2,
            lora: LoraConfig {
                rank: 8,
                alpha: 16.0,
                dropout: 0.0,
                ..LoraConfig::default()
            },
            projector_init: ProjectorInitConfig::default(),
            score_heads: ScoreHeadsConfig::default(),
        }
    }
}

impl FinetuneConfig {
    pub fn total_steps(&self) -> usize {
        self.stages.iter().map(|s| s.steps).sum()
    }

    /// The stage step `step` belongs to, with the step's index within that stage.
    pub fn stage_at(&self, step: usize) -> Option<(usize, usize)> {
        let mut start = 0;
        for (i, stage) in self.stages.iter().enumerate() {
            if step < start + stage.steps {
                return Some((i, step - start));
            }
            start += stage.steps;
        }
        None
    }

    pub fn uses_lora(&self) -> bool {
        self.stages
            .iter()
            .any(|s| s.trainable.llm == LlmTraining::Lora)
    }

    pub fn trains_llm_base(&self) -> bool {
        self.stages
            .iter()
            .any(|s| s.trainable.llm == LlmTraining::Full)
    }

    /// Which parameters checkpoints hold, as a regex over parameter paths: all (`None`) when
    /// the LLM's base weights train, else those under `SAVED_PREFIXES`.
    pub fn saved_pattern(&self) -> Option<String> {
        let prefixes: Vec<String> = SAVED_PREFIXES
            .iter()
            .map(|p| p.replace('.', r"\."))
            .collect();
        (!self.trains_llm_base()).then(|| format!(r"^({})\.", prefixes.join("|")))
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        if self.stages.is_empty() {
            return Err(Invalid::new("finetune.stages", "needs at least one stage"));
        }
        for (i, stage) in self.stages.iter().enumerate() {
            let key = format!("finetune.stages[{i}]");
            crate::model::size_within(
                &format!("{key}.steps"),
                stage.steps,
                crate::train::schedule::MAX_STEPS,
            )?;
            let s = &stage.schedule;
            if !(s.peak_lr > 0.0 && s.peak_lr.is_finite()) {
                return Err(Invalid::new(
                    format!("{key}.schedule.peak_lr"),
                    "must be positive",
                ));
            }
            if s.warmup_steps > stage.steps {
                return Err(Invalid::new(
                    format!("{key}.schedule.warmup_steps"),
                    format!(
                        "{} exceeds the stage's {} steps",
                        s.warmup_steps, stage.steps
                    ),
                ));
            }
            if !(0.0..=1.0).contains(&s.min_lr_ratio) {
                return Err(Invalid::new(
                    format!("{key}.schedule.min_lr_ratio"),
                    "must be within [0, 1]",
                ));
            }
            validate_mix(&stage.mix, &format!("{key}.mix"))?;
            if !(stage.mfam_lr_scale > 0.0 && stage.mfam_lr_scale.is_finite()) {
                return Err(Invalid::new(
                    format!("{key}.mfam_lr_scale"),
                    "must be positive",
                ));
            }
            let t = &stage.trainable;
            if !t.mfam && !t.projector && t.llm == LlmTraining::Frozen {
                return Err(Invalid::new(
                    format!("{key}.trainable"),
                    "trains nothing: set mfam, projector or llm",
                ));
            }
        }
        crate::model::size_within(
            "finetune.batch_size",
            self.batch_size,
            crate::data::loader::MAX_BATCH_SIZE,
        )?;
        crate::model::size_within(
            "finetune.gradient_accumulation",
            self.gradient_accumulation,
            crate::train::schedule::MAX_ACCUMULATION,
        )?;
        if self.total_steps() > crate::train::schedule::MAX_STEPS {
            return Err(Invalid::new(
                "finetune.stages",
                format!(
                    "{} steps in all, over {}",
                    self.total_steps(),
                    crate::train::schedule::MAX_STEPS
                ),
            ));
        }
        if !(16..=crate::model::limits::POSITIONS).contains(&self.max_length) {
            return Err(Invalid::new(
                "finetune.max_length",
                format!(
                    "{} is outside 16..={}",
                    self.max_length,
                    crate::model::limits::POSITIONS
                ),
            ));
        }
        for (key, weight) in [
            (
                "finetune.score_heads.distribution_weight",
                self.score_heads.distribution_weight,
            ),
            (
                "finetune.score_heads.regression_weight",
                self.score_heads.regression_weight,
            ),
        ] {
            if !(weight >= 0.0 && weight.is_finite()) {
                return Err(Invalid::new(key, "must be zero or positive"));
            }
        }
        if let Some(max) = self.max_grad_norm
            && !(max > 0.0 && max.is_finite())
        {
            return Err(Invalid::new(
                "finetune.max_grad_norm",
                "must be positive (or null)",
            ));
        }
        let init = &self.projector_init;
        if init.kind == ProjectorInitKind::LeastSquares {
            if init.batches == 0 {
                return Err(Invalid::new(
                    "finetune.projector_init.batches",
                    "must be at least 1 for least_squares",
                ));
            }
            if !(init.ridge > 0.0 && init.ridge.is_finite()) {
                return Err(Invalid::new(
                    "finetune.projector_init.ridge",
                    "must be positive",
                ));
            }
        }
        if self.uses_lora() {
            if self.lora.rank == 0 || self.lora.target_modules.is_empty() {
                return Err(Invalid::new(
                    "finetune.lora",
                    "a LoRA stage needs rank >= 1 and at least one target module",
                ));
            }
            crate::model::size_within(
                "finetune.lora.rank",
                self.lora.rank,
                crate::model::limits::WIDTH,
            )?;
            crate::model::positive("finetune.lora.alpha", self.lora.alpha)?;
            if !(0.0..1.0).contains(&self.lora.dropout) {
                return Err(Invalid::new(
                    "finetune.lora.dropout",
                    format!("{} is outside [0, 1)", self.lora.dropout),
                ));
            }
        }
        self.optimizer.validate("finetune.optimizer")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FinetuneError {
    #[error(transparent)]
    Pretrain(#[from] PretrainError),
    #[error(transparent)]
    Run(#[from] crate::run::RunError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    TrainCheckpoint(#[from] TrainCheckpointError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Models(#[from] ModelsError),
    #[error(transparent)]
    Events(#[from] EventError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("fitting the level projections (finetune.projector_init): {0}")]
    ProjectorInit(#[from] FitError),
    #[error("micro-batch {index}: {source}")]
    Batch { index: usize, source: PrepareError },
    #[error("micro-batch {index}: no sample could be made ({reasons})")]
    EmptyBatch { index: usize, reasons: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the batch-building thread stopped unexpectedly")]
    WorkerLost,
    #[error("the loss became {value} at step {step}; lower the stage's schedule.peak_lr?")]
    NotFinite { step: usize, value: f64 },
    #[error(
        "the pretraining run {run} was made with another {what} than this config's; fine-tune with the run's model settings"
    )]
    Mismatch { run: PathBuf, what: &'static str },
    #[error("{0}")]
    Invalid(String),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> FinetuneError + '_ {
    move |source| FinetuneError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The LLM a config names (`model.weights.llm`), fetching the default SmolLM2 when unset.
pub fn llm_path(config: &ExperimentConfig) -> Result<PathBuf, FinetuneError> {
    match &config.model.weights.llm {
        Some(path) => Ok(path.clone()),
        None => {
            let dir = ensure_fetched(FetchedModel::Smollm2)?;
            Ok(dir.join(FetchedModel::Smollm2.main_file()))
        }
    }
}

/// The tokenizer with the config's system prompt, when it sets one.
pub fn with_system_prompt(mut tokenizer: LlmTokenizer, system: Option<&str>) -> LlmTokenizer {
    if let Some(system) = system {
        tokenizer.template = match tokenizer.template {
            ChatTemplate::VicunaV1 { .. } => ChatTemplate::VicunaV1 {
                system: system.to_string(),
            },
            ChatTemplate::ChatMl { .. } => ChatTemplate::ChatMl {
                system: system.to_string(),
            },
        };
    }
    tokenizer
}

/// Everything a fine-tuning run or `infer` uses: the frozen image encoder, the tokenizer and
/// the model.
pub struct Loaded {
    pub encoder: FrozenEncoder,
    pub tokenizer: LlmTokenizer,
    pub model: Calm,
    /// Tokens each image becomes.
    pub visual_tokens: usize,
}

impl Loaded {
    pub fn preparer<'a>(
        &'a self,
        transform: &'a crate::data::Transform,
        max_length: usize,
    ) -> Preparer<'a> {
        Preparer {
            encoder: &self.encoder,
            tokenizer: &self.tokenizer,
            transform,
            visual_tokens: self.visual_tokens,
            max_length,
        }
    }
}

/// The model as step 0 of a fine-tuning run sees it: the pretraining run's MFAM, the LLM
/// from its file, fresh LoRA adapters drawn from the seed when a stage uses them, and
/// numbered parameter ids. The encoder lives on `device`, the model on `model_device` (an
/// autodiff one for training).
pub fn initial_model(
    config: &ExperimentConfig,
    pretrained: &PretrainedRun,
    device: &Device,
    model_device: &Device,
) -> Result<Loaded, FinetuneError> {
    check_same_model(config, pretrained)?;
    let frozen = Frozen::load(&pretrained.config, device)?;
    let mut mfam = pretrain::load_pretrained(pretrained, &frozen, model_device)?.mfam;
    mfam.set_pooling(&config.model.mfam);
    let device = model_device;
    let (llm, tokenizer) = load_chat_model(&llm_path(config)?, device)?;
    if llm.model.embed_tokens.weight.dims()[1] != config.model.mfam.llm_hidden_size {
        return Err(FinetuneError::Invalid(format!(
            "the LLM's hidden size is {}, but model.mfam.llm_hidden_size is {}",
            llm.model.embed_tokens.weight.dims()[1],
            config.model.mfam.llm_hidden_size
        )));
    }
    device.seed(config.seed);
    let llm = if config.finetune.uses_lora() {
        llm.with_lora(&config.finetune.lora, device)
    } else {
        llm
    };
    let tokenizer = with_system_prompt(tokenizer, config.model.llm.system_prompt.as_deref());
    let score_head = config
        .finetune
        .score_heads
        .enabled()
        .then(|| ScoreHead::new(config.model.mfam.llm_hidden_size, device));
    Ok(Loaded {
        encoder: frozen.encoder,
        tokenizer,
        model: numbered_params(Calm {
            mfam,
            llm,
            score_head,
        }),
        visual_tokens: config
            .model
            .mfam
            .group_lengths(&config.model.vision)
            .iter()
            .map(|(_, n)| n)
            .sum(),
    })
}

/// The encoder and MFAM must be the pretraining run's: its weights are loaded by name.
fn check_same_model(
    config: &ExperimentConfig,
    pretrained: &PretrainedRun,
) -> Result<(), FinetuneError> {
    let run = pretrained.model.clone();
    let p = &pretrained.config.model;
    if p.vision != config.model.vision || p.weights.vision != config.model.weights.vision {
        return Err(FinetuneError::Mismatch {
            run,
            what: "image encoder",
        });
    }
    if p.mfam.without_pooling() != config.model.mfam.without_pooling() {
        return Err(FinetuneError::Mismatch {
            run,
            what: "MFAM (model.mfam)",
        });
    }
    Ok(())
}

/// Takes the gradients of the MFAM's Q-Former side (queries, adapters, Q-Formers) out of
/// `grads`, leaving the projections' and the LLM's. Adam keeps its state per parameter, so
/// stepping the two sets apart with two learning rates is one step with a learning rate per
/// group.
fn take_qformer_grads(mfam: &Mfam, grads: &mut GradientsParams) -> GradientsParams {
    let mut taken = GradientsParams::new();
    for branch in [&mfam.low, &mfam.middle, &mfam.high].into_iter().flatten() {
        move_grads(&branch.query_tokens, grads, &mut taken);
        move_grads(&branch.adapters, grads, &mut taken);
        move_grads(&branch.qformer, grads, &mut taken);
    }
    move_grads(&mfam.qformer, grads, &mut taken);
    taken
}

/// Sets which parameters receive gradients in a stage.
pub fn set_trainable(mut model: Calm, trainable: &Trainable) -> Calm {
    let mfam = &mut model.mfam;
    for branch in [&mut mfam.low, &mut mfam.middle, &mut mfam.high]
        .into_iter()
        .flatten()
    {
        branch.query_tokens = branch.query_tokens.clone().set_require_grad(trainable.mfam);
        branch.adapters = std::mem::take(&mut branch.adapters)
            .into_iter()
            .map(|a| a.map(|a| a.set_require_grad(trainable.mfam)))
            .collect();
        branch.qformer = branch
            .qformer
            .take()
            .map(|q| q.set_require_grad(trainable.mfam));
        branch.language_projection = branch
            .language_projection
            .clone()
            .set_require_grad(trainable.projector);
    }
    mfam.qformer = mfam
        .qformer
        .take()
        .map(|q| q.set_require_grad(trainable.mfam));
    mfam.thematic = mfam
        .thematic
        .take()
        .map(|p| p.set_require_grad(trainable.projector));
    let llm = &mut model.llm;
    let full = trainable.llm == LlmTraining::Full;
    llm.model = llm.model.clone().set_require_grad(full);
    llm.lm_head = llm.lm_head.take().map(|h| h.set_require_grad(full));
    llm.lora = llm
        .lora
        .take()
        .map(|l| l.set_require_grad(trainable.llm == LlmTraining::Lora));
    // The heads are new in fine-tuning and read what every stage shapes: they always train.
    model.score_head = model.score_head.take().map(|h| h.set_require_grad(true));
    model
}

/// One line of `metrics.jsonl` per optimiser step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: usize,
    pub stage: String,
    pub lr: f64,
    /// Mean cross-entropy over the step's supervised tokens.
    pub loss: f64,
    /// The same per task, over the tokens of that task's conversations; with score heads,
    /// also `score_emd` and `score_regression`, each the mean over the step's scoring answers
    /// (unweighted; the step's loss adds them times their `score_heads` weights).
    pub losses: BTreeMap<String, f64>,
    pub grad_norm: f64,
    pub tokens: usize,
    pub tokens_per_second: f64,
}

impl StepLine for StepMetrics {
    fn step(&self) -> usize {
        self.step
    }
}

/// What a checkpoint records besides the weights.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinetuneState {
    pub step: usize,
    pub micro_batches: usize,
    pub skipped: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FinetuneSummary {
    pub steps: usize,
    pub resumed_from: Option<usize>,
    pub pretrained: String,
    pub train_photos: usize,
    pub held_out: Vec<String>,
    pub first_step: StepMetrics,
    pub last_step: StepMetrics,
    pub train_seconds: f64,
    pub skipped: Vec<String>,
}

/// The task mixes of every stage, built once: the self-supervised builder over `photos`.
fn build_mixes(config: &ExperimentConfig, photos: &[PathBuf]) -> Result<Vec<Mix>, FinetuneError> {
    let transform = config.data.transform(&config.model.vision);
    config
        .finetune
        .stages
        .iter()
        .map(|stage| {
            let builders = stage
                .mix
                .iter()
                .map(|entry| {
                    let builder: Box<dyn TaskBuilder> = match &entry.task {
                        TaskSourceConfig::SelfSupervised(c) => Box::new(SelfSupervisedTasks {
                            config: c.clone(),
                            photos: photos.to_vec(),
                            transform: transform.clone(),
                        }),
                        TaskSourceConfig::SimulatedRaters(c) => {
                            let raters = SimulatedRaters::new(
                                c.clone(),
                                photos,
                                config.data.loader.bad_images,
                            )?;
                            for skipped in &raters.skipped {
                                crate::errln!("simulated raters: photo left out: {skipped}");
                            }
                            Box::new(raters)
                        }
                        other => build_task(other)?.ok_or_else(|| {
                            FinetuneError::Invalid(format!(
                                "stage `{}`: no builder for {other:?}",
                                stage.name
                            ))
                        })?,
                    };
                    Ok((builder, entry.ratio))
                })
                .collect::<Result<Vec<_>, FinetuneError>>()?;
            Ok(Mix::new(builders)?)
        })
        .collect()
}

/// Fine-tunes in the run directory `run` (holding the resolved config) from `pretrained`,
/// from scratch or, with `resume`, from the run's latest checkpoint.
pub fn finetune(
    config: &ExperimentConfig,
    pretrained: &PretrainedRun,
    run: &Path,
    device: &Device,
    resume: bool,
) -> Result<FinetuneSummary, FinetuneError> {
    let f = &config.finetune;
    let _lock = crate::run::RunLock::acquire(run)?;
    checkpoints::remove_debris(run)?;
    if !resume {
        write_pretrained(run, pretrained)?;
    }
    // The pretraining run's split: its held-out photos stay unseen here too.
    let split = pretraining_split(pretrained)?;
    let mixes = build_mixes(config, &split.train)?;
    let train_device = device.clone().autodiff();
    let mut loaded = initial_model(config, pretrained, device, &train_device)?;
    let mut optimizer = f.optimizer.init();
    let mut state = FinetuneState {
        step: 0,
        micro_batches: 0,
        skipped: Vec::new(),
    };
    let pattern = f.saved_pattern();
    let kept = |path: &str| pattern.is_some() && !is_saved(path);
    let mut resumed_from = None;
    // A run killed before its first checkpoint resumes from step 0.
    let checkpoint = if resume {
        checkpoints::latest(run)?
    } else {
        None
    };
    if let Some(dir) = &checkpoint {
        (optimizer, state) = checkpoints::load_matching(dir, &mut loaded.model, optimizer, kept)?;
        resumed_from = Some(state.step);
    }
    if resume {
        metrics::keep_before::<StepMetrics>(&run.join(METRICS), state.step)?;
    }
    let events_dir = run.join(EVENTS);
    std::fs::create_dir_all(&events_dir).map_err(io_error(&events_dir))?;
    let mut events = EventWriter::create(&events_dir)?;
    let metrics_path = run.join(METRICS);
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .map_err(io_error(&metrics_path))?;

    let transform = config.data.transform(&config.model.vision);
    let preparer = loaded.preparer(&transform, f.max_length);
    let total_steps = f.total_steps();
    let accumulation = f.gradient_accumulation;
    let total_micro = total_steps * accumulation;
    let first_micro = state.micro_batches;
    let policy = config.data.loader.bad_images;
    let prefetch = config.data.loader.prefetch_batches.max(1);
    let seed = config.seed;
    let progress = Progress::new(total_steps, state.step, "tok/s");
    let started = Instant::now();
    let mut model = match (checkpoint.is_some(), f.projector_init.kind, mixes.first()) {
        (false, ProjectorInitKind::LeastSquares, Some(first)) => {
            init_projections(config, &preparer, loaded.model.clone(), first, device)?
        }
        _ => loaded.model.clone(),
    };
    let mut current_stage = None;

    let model = std::thread::scope(|scope| -> Result<Calm, FinetuneError> {
        let (sender, receiver) = sync_channel(prefetch);
        let preparer = &preparer;
        let mixes = &mixes;
        scope.spawn(move || {
            for index in first_micro..total_micro {
                let step = index / accumulation;
                let Some((stage, _)) = f.stage_at(step) else {
                    break;
                };
                let built = build_micro_batch(
                    preparer,
                    &mixes[stage],
                    f.batch_size,
                    mix(seed, stage as u64, 11),
                    index,
                    policy,
                    device,
                );
                if sender.send(built).is_err() {
                    break;
                }
            }
        });
        for step in state.step..total_steps {
            let Some((stage_index, in_stage)) = f.stage_at(step) else {
                break;
            };
            let stage = &f.stages[stage_index];
            if current_stage != Some(stage_index) {
                model = set_trainable(model, &stage.trainable);
                current_stage = Some(stage_index);
            }
            let t0 = Instant::now();
            let lr = stage.schedule.lr_at(in_stage, stage.steps);
            let mut accumulator = GradientsAccumulator::new();
            let mut sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
            let mut total_loss = 0.0;
            let mut tokens = 0;
            let mut micro = Vec::with_capacity(accumulation);
            for _ in 0..accumulation {
                let (prepared, skipped) =
                    receiver.recv().map_err(|_| FinetuneError::WorkerLost)??;
                pretrain::note_skipped(&mut state.skipped, skipped);
                micro.push(prepared);
            }
            let step_tokens: usize = micro
                .iter()
                .map(|p| p.target_tasks().len())
                .sum::<usize>()
                .max(1);
            let step_scores: usize = micro
                .iter()
                .map(|p| p.scores.iter().flatten().count())
                .sum::<usize>()
                .max(1);
            let weights = &f.score_heads;
            let mut score_total = 0.0;
            for prepared in &micro {
                let batch = prepared.to_device(&train_device, true);
                let losses = model.losses(&batch, !weights.train_model);
                let token_losses = losses.tokens;
                let values: Vec<f32> = token_losses.clone().into_data().iter::<f32>().collect();
                for (task, value) in prepared.target_tasks().into_iter().zip(&values) {
                    let entry = sums.entry(task.name().to_string()).or_default();
                    entry.0 += f64::from(*value);
                    entry.1 += 1;
                    total_loss += f64::from(*value) / step_tokens as f64;
                }
                tokens += values.len();
                // Token-weighted over the whole step, as one large batch would be.
                let mut loss = token_losses.sum() / step_tokens as f64;
                if let Some((emd, squared)) = losses.scores {
                    for (name, part, weight) in [
                        ("score_emd", emd, weights.distribution_weight),
                        ("score_regression", squared, weights.regression_weight),
                    ] {
                        let values: Vec<f32> = part.clone().into_data().iter::<f32>().collect();
                        let entry = sums.entry(name.to_string()).or_default();
                        entry.0 += values.iter().map(|&v| f64::from(v)).sum::<f64>();
                        entry.1 += values.len();
                        score_total += weight * values.iter().map(|&v| f64::from(v)).sum::<f64>()
                            / step_scores as f64;
                        // Averaged over the step's scoring answers, as the tokens are.
                        loss = loss + part.sum() * (weight / step_scores as f64);
                    }
                }
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                accumulator.accumulate(&model, grads);
            }
            if !(total_loss.is_finite() && score_total.is_finite()) {
                return Err(FinetuneError::NotFinite {
                    step,
                    value: total_loss + score_total,
                });
            }
            let mut grads = accumulator.grads();
            // Heads that do not train the model are stepped apart, clipped on their own: in
            // the global norm they would rescale the model's step, and the words would no
            // longer be those a run without heads learns.
            let mut head_grads = GradientsParams::new();
            if let (false, Some(head)) = (weights.train_model, &model.score_head) {
                move_grads(head, &mut grads, &mut head_grads);
                if let Some(max) = f.max_grad_norm {
                    clip_global_norm(head, &mut head_grads, max);
                }
            }
            let grad_norm = match f.max_grad_norm {
                Some(max) => clip_global_norm(&model, &mut grads, max),
                None => global_grad_norm(&model, &grads),
            };
            if !head_grads.is_empty() {
                model = optimizer.step(lr, model, head_grads);
            }
            if stage.trainable.mfam && stage.mfam_lr_scale != 1.0 {
                let mfam_grads = take_qformer_grads(&model.mfam, &mut grads);
                model = optimizer.step(lr * stage.mfam_lr_scale, model, mfam_grads);
            }
            model = optimizer.step(lr, model, grads);
            state.step = step + 1;
            state.micro_batches += accumulation;
            let seconds = t0.elapsed().as_secs_f64();
            let line = StepMetrics {
                step,
                stage: stage.name.clone(),
                lr,
                loss: total_loss,
                losses: sums
                    .into_iter()
                    .map(|(k, (s, n))| (k, s / n.max(1) as f64))
                    .collect(),
                grad_norm,
                tokens,
                tokens_per_second: micro
                    .iter()
                    .map(|p| p.rows.iter().map(|r| r.len()).sum::<usize>())
                    .sum::<usize>() as f64
                    / seconds.max(1e-9),
            };
            log_step(&mut events, &mut metrics, &metrics_path, &line)?;
            progress.step(step, total_loss, lr, line.tokens_per_second);
            let due = f.checkpoint_every > 0 && state.step.is_multiple_of(f.checkpoint_every);
            if due || state.step == total_steps {
                events.flush()?;
                checkpoints::save_matching(
                    run,
                    &model,
                    pattern.as_deref(),
                    &optimizer,
                    state.step,
                    &state,
                    f.keep_checkpoints,
                )?;
            }
        }
        Ok(model)
    })?;
    let train_seconds = started.elapsed().as_secs_f64();
    crate::io::checkpoint::save_module_matching(
        &model,
        &run.join(FINAL_MODEL),
        pattern.as_deref(),
    )?;
    let all: Vec<StepMetrics> = metrics::read(&metrics_path)?;
    let (Some(first_step), Some(last_step)) = (all.first().cloned(), all.last().cloned()) else {
        return Err(FinetuneError::Io {
            path: metrics_path,
            source: std::io::Error::other("no steps recorded"),
        });
    };
    Ok(FinetuneSummary {
        steps: total_steps,
        resumed_from,
        pretrained: pretrained.model.display().to_string(),
        train_photos: split.train.len(),
        held_out: split
            .held_out
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        first_step,
        last_step,
        train_seconds,
        skipped: state.skipped,
    })
}

/// The photos the pretraining run trained on and held out: the split it recorded, else (a run
/// made before runs recorded it) drawn again as it drew it.
fn pretraining_split(pretrained: &PretrainedRun) -> Result<pretrain::Split, FinetuneError> {
    if let Some(split) = pretrain::read_split(&pretrained.dir)? {
        return Ok(split);
    }
    let pc = &pretrained.config;
    Ok(pretrain::split_photos(
        pc.data.image_paths()?,
        pc.pretrain.hold_out,
        pc.seed,
    )?)
}

/// Fits the level projections to micro-batches of the first stage's data drawn apart from
/// the training stream (`train::projector_init`), before step 0.
fn init_projections(
    config: &ExperimentConfig,
    preparer: &Preparer<'_>,
    model: Calm,
    first: &Mix,
    device: &Device,
) -> Result<Calm, FinetuneError> {
    let f = &config.finetune;
    let policy = config.data.loader.bad_images;
    let batches = (0..f.projector_init.batches)
        .map(|index| {
            build_micro_batch(
                preparer,
                first,
                f.batch_size,
                mix(config.seed, 0, 13),
                index,
                policy,
                device,
            )
            .map(|(batch, _)| batch)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (model, report) = fit_level_projections(model, &batches, f.projector_init.ridge, device)?;
    let fits: Vec<String> = report
        .r_squared
        .iter()
        .map(|(level, r2)| format!("{level} R² {r2:.3}"))
        .collect();
    // Progress, best effort like the progress lines: a closed stdout must not stop training.
    let _ = crate::outln!(
        "level projections fitted by least squares on {} images: {}",
        report.images,
        fits.join(", ")
    );
    Ok(model)
}

/// The modules a checkpoint holds when the LLM's base weights stay frozen: the MFAM, the LoRA
/// adapters and the score heads. The one list both saving and loading read.
const SAVED_PREFIXES: [&str; 3] = ["mfam", "llm.lora", "score_head"];

/// Whether a parameter path is among those `saved_pattern` keeps.
fn is_saved(path: &str) -> bool {
    SAVED_PREFIXES.iter().any(|prefix| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.'))
    })
}

type Built = Result<(PreparedBatch, Vec<String>), FinetuneError>;

fn build_micro_batch(
    preparer: &Preparer<'_>,
    mix_: &Mix,
    batch: usize,
    seed: u64,
    index: usize,
    policy: BadImagePolicy,
    device: &Device,
) -> Built {
    let mut samples = Vec::with_capacity(batch);
    let mut skipped = Vec::new();
    // A sample that cannot be made is replaced by the next one of the stream, so that a batch
    // keeps its size (a batch of one bad photo would otherwise be empty) and stays a function
    // of its index; an epoch's worth of failures past the batch's own means the data is
    // unusable.
    let start = index * batch;
    let end = start + pretrain::replacement_budget(batch, mix_.len());
    for sample_index in start..end {
        if samples.len() == batch {
            break;
        }
        let made = mix_
            .sample(sample_index, batch, seed)
            .map_err(|e| e.to_string())
            .and_then(|sample| {
                let images = sample
                    .images
                    .iter()
                    .enumerate()
                    .map(|(k, image)| {
                        preparer
                            .image(image, mix(seed, sample_index as u64, k as u64))
                            .map_err(|e| e.to_string())
                    })
                    .collect::<Result<Vec<Arc<_>>, String>>()?;
                Ok((sample, images))
            });
        match made {
            Ok(s) => samples.push(s),
            Err(reason) => match policy {
                BadImagePolicy::Skip => pretrain::note_skipped(&mut skipped, vec![reason]),
                BadImagePolicy::Fail => {
                    return Err(FinetuneError::EmptyBatch {
                        index,
                        reasons: reason,
                    });
                }
            },
        }
    }
    if samples.is_empty() {
        return Err(FinetuneError::EmptyBatch {
            index,
            reasons: skipped.join("; "),
        });
    }
    let prepared = preparer
        .prepare(&samples, false, device)
        .map_err(|source| FinetuneError::Batch { index, source })?;
    Ok((prepared, skipped))
}

fn log_step(
    events: &mut EventWriter,
    metrics: &mut std::fs::File,
    path: &Path,
    line: &StepMetrics,
) -> Result<(), FinetuneError> {
    let step = line.step as i64;
    events.scalar("loss/total", step, line.loss as f32)?;
    for (name, value) in &line.losses {
        events.scalar(&format!("loss/{name}"), step, *value as f32)?;
    }
    events.scalar("lr", step, line.lr as f32)?;
    events.scalar("grad_norm", step, line.grad_norm as f32)?;
    events.scalar(
        "throughput/tokens_per_second",
        step,
        line.tokens_per_second as f32,
    )?;
    Ok(metrics::append(metrics, path, line)?)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PretrainedRecord {
    /// The pretraining run's directory.
    run: PathBuf,
}

/// Records in `run` the pretraining run it starts from (`pretrained.json`).
pub fn write_pretrained(run: &Path, pretrained: &PretrainedRun) -> Result<(), FinetuneError> {
    let record = PretrainedRecord {
        run: pretrained.dir.clone(),
    };
    let path = run.join(PRETRAINED);
    let json = serde_json::to_string_pretty(&record).map_err(|e| FinetuneError::Io {
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    crate::io::atomic::write_atomic(&path, json.as_bytes()).map_err(|e| FinetuneError::Io {
        path: e.path,
        source: e.source,
    })
}

/// A fine-tuning run found on disk: its config, the pretraining run it started from, and the
/// weights to load (the final model, else the latest checkpoint's).
pub struct FinetunedRun {
    pub dir: PathBuf,
    pub config: ExperimentConfig,
    pub pretrained: PretrainedRun,
    pub model: PathBuf,
}

/// Finds a run from its directory or one of its checkpoint folders.
pub fn find_run(path: &Path) -> Result<FinetunedRun, FinetuneError> {
    let (dir, model) = checkpoints::locate(path, FINAL_MODEL)?;
    let (config, pretrained) = run_record(&dir)?;
    Ok(FinetunedRun {
        dir,
        config,
        pretrained,
        model,
    })
}

/// The config a run directory was started with and the pretraining run it starts from: what
/// `--resume` continues, even when the run was killed before its first checkpoint.
pub fn run_record(dir: &Path) -> Result<(ExperimentConfig, PretrainedRun), FinetuneError> {
    if let Some(other) = crate::run::recorded_command(dir).filter(|c| c != "finetune") {
        return Err(FinetuneError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::other(format!(
                "not a fine-tuning run: its {} says `{other}` made it",
                crate::run::RUN_RECORD
            )),
        });
    }
    let record_path = dir.join(PRETRAINED);
    let text =
        crate::files::read_string(&record_path, crate::files::MAX_CONFIG_BYTES).map_err(|e| {
            FinetuneError::Io {
                path: record_path.clone(),
                source: std::io::Error::new(
                    e.kind(),
                    format!("not a fine-tuning run (its {PRETRAINED} is unreadable: {e})"),
                ),
            }
        })?;
    let record: PretrainedRecord = serde_json::from_str(&text).map_err(|e| FinetuneError::Io {
        path: record_path.clone(),
        source: std::io::Error::other(e),
    })?;
    let config_path = dir.join(crate::run::RESOLVED_CONFIG);
    let mut config = crate::config::load(Some(&config_path), &[]).map_err(PretrainError::from)?;
    keep_unpooled_levels(&mut config, &config_path)?;
    let pretrained = pretrain::find_run(&resolve_relative(&record.run, dir))?;
    Ok((config, pretrained))
}

/// A run saved before levels could pool has no `pool` key in its resolved config, and its
/// LLM read every query; the defaults the config is laid over now pool, so such a level is
/// set back to `null` here, or `infer` and `--resume` would feed the run fewer tokens than it
/// was trained on.
fn keep_unpooled_levels(config: &mut ExperimentConfig, path: &Path) -> Result<(), FinetuneError> {
    let text =
        crate::files::read_string(path, crate::files::MAX_CONFIG_BYTES).map_err(io_error(path))?;
    let saved: serde_json::Value =
        serde_saphyr::from_str(&text).map_err(|e| FinetuneError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(crate::config::yaml_error_line(&e.to_string())),
        })?;
    let mfam = &mut config.model.mfam;
    for (name, level) in [
        ("low", &mut mfam.low),
        ("middle", &mut mfam.middle),
        ("high", &mut mfam.high),
    ] {
        if saved["model"]["mfam"][name].get("pool").is_none() {
            level.pool = None;
        }
    }
    Ok(())
}

/// A recorded path as written (relative to where the run was started), or, when that is
/// gone, relative to the run's parent folders (a run tree moved as a whole).
fn resolve_relative(recorded: &Path, run: &Path) -> PathBuf {
    if recorded.exists() || recorded.is_absolute() {
        return recorded.to_path_buf();
    }
    run.ancestors()
        .skip(1)
        .map(|base| base.join(recorded))
        .find(|p| p.exists())
        .unwrap_or_else(|| recorded.to_path_buf())
}

/// The fine-tuned model of a run, on `device`, ready for inference.
pub fn load_finetuned(run: &FinetunedRun, device: &Device) -> Result<Loaded, FinetuneError> {
    let mut loaded = initial_model(&run.config, &run.pretrained, device, device)?;
    let pattern = run.config.finetune.saved_pattern();
    let report = crate::io::checkpoint::load_module_except(&mut loaded.model, &run.model, |p| {
        pattern.is_some() && !is_saved(p)
    })?;
    if !report.unexpected.is_empty() {
        return Err(FinetuneError::Io {
            path: run.model.clone(),
            source: std::io::Error::other(format!(
                "holds weights the run's model lacks: {}",
                report.unexpected.join(", ")
            )),
        });
    }
    Ok(loaded)
}
