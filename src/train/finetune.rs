//! Stage 2 of CALM: instruction tuning (docs/design.md §2). The pretrained MFAM's visual
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
use std::path::PathBuf;
use std::sync::Arc;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::checkpoints::{Kept, TrainCheckpointError};
use super::instruct_batch::{PrepareError, PreparedBatch, Preparer};
use super::metrics::MetricsError;
use super::optim::{OptimizerConfig, move_grads};
use super::pretrain::PretrainError;
use super::projector_init::{FitError, ProjectorInitConfig, ProjectorInitKind};
use super::schedule::ScheduleConfig;
use super::tensorboard::EventError;
use super::trainer::{
    self, Job, LoopSettings, StepFields, StepRecord, Summed, Tally, TrainSummary, TrainerError,
};
use crate::config::Invalid;
use crate::data::DataConfig;
use crate::data::instruct::Task;
use crate::data::selfsup_instruct::SelfSupervisedConfig;
use crate::data::tasks::{Mix, MixEntry, TaskSourceConfig, validate_mix};
use crate::data::{BadImagePolicy, DataError};
use crate::io::checkpoint::CheckpointError;
use crate::io::models::ModelsError;
use crate::model::calm::Calm;
use crate::model::chat::{ChatTemplate, LlmTokenizer};
use crate::model::lora::LoraConfig;
use crate::model::mfam::Mfam;
use crate::model::vision::frozen::FrozenEncoder;
use crate::streams::Stream;

/// How the LLM trains in a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LlmTraining {
    Frozen,
    Full,
    Lora,
}

/// What a stage trains. The image encoder is always frozen. A stage that names `trainable`
/// gives all three fields: filled in from a default, a partial one would silently train other
/// parts than its writer meant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trainable {
    /// The Q-Formers, their query tokens and adapters.
    pub mfam: bool,
    /// The projections into the LLM's width (each level's and the thematic branch's).
    pub projector: bool,
    pub llm: LlmTraining,
}

impl Default for Trainable {
    /// The built-in stage's. The pretrained MFAM stays as it is: at the stage's learning rate
    /// Adam would wash out its features within a few dozen steps (measured: every held-out
    /// photo then got the same answer). The projections start from scratch and LoRA adapts
    /// the LLM.
    fn default() -> Self {
        Self {
            mfam: false,
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
            trainable: Trainable::default(),
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
            lora: LoraConfig::default(),
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

    /// Which parameters checkpoints hold: all when the LLM's base weights train, else the
    /// trained parts alone.
    pub fn kept(&self) -> Kept {
        if self.trains_llm_base() {
            Kept::All
        } else {
            Kept::Trained
        }
    }

    /// The training loop's settings for this section.
    pub fn loop_settings(
        &self,
        data: &DataConfig,
        distributed: &crate::distributed::DistributedConfig,
    ) -> LoopSettings {
        LoopSettings {
            steps: self.total_steps(),
            gradient_accumulation: self.gradient_accumulation,
            max_grad_norm: self.max_grad_norm,
            checkpoint_every: self.checkpoint_every,
            keep_checkpoints: self.keep_checkpoints,
            prefetch_batches: data.loader.prefetch_batches,
            kept: self.kept(),
            lr_key: "the stage's schedule.peak_lr",
            accumulation_key: "finetune.gradient_accumulation",
            check_every: distributed.check_every,
            zero: distributed.zero,
            throughput_unit: "tok/s",
        }
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
    #[error(transparent)]
    Trainer(#[from] TrainerError),
    #[error(
        "the pretraining run {run} was made with another {what} than this config's; fine-tune with the run's model settings"
    )]
    Mismatch { run: PathBuf, what: &'static str },
    #[error("{0}")]
    Invalid(String),
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

/// One line of `metrics.jsonl` per optimiser step. Its `losses` hold the mean cross-entropy
/// per task, over the tokens of that task's conversations; with score heads, also `score_emd`
/// and `score_regression`, each the mean over the step's scoring answers (unweighted; the
/// step's loss adds them times their `score_heads` weights).
pub type StepMetrics = StepRecord<FinetuneFields>;

/// Fine-tuning's own fields of a metrics line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneFields {
    pub stage: String,
    /// Supervised tokens.
    pub tokens: usize,
    /// Every token read, prompts included.
    pub tokens_per_second: f64,
}

impl StepFields for FinetuneFields {
    fn throughput(&self) -> (&'static str, f64) {
        ("tokens_per_second", self.tokens_per_second)
    }
}

/// What `summary.json` holds after fine-tuning; the command adds the held-out evaluation.
pub type FinetuneSummary = TrainSummary<FinetuneFields, FinetuneSource>;

/// What fine-tuning adds to a summary.
#[derive(Debug, Clone, Serialize)]
pub struct FinetuneSource {
    /// The pretrained MFAM's weights it started from.
    pub pretrained: String,
}

/// Instruction tuning as the trainer sees it: micro-batches of conversations from each
/// stage's mix, the cross-entropy over the answers' tokens (plus the score heads' losses),
/// and per stage, which parts train and at which learning rate.
pub struct FinetuneJob<'a> {
    pub config: &'a FinetuneConfig,
    pub preparer: &'a Preparer<'a>,
    pub mixes: &'a [Mix],
    pub seed: u64,
    pub policy: BadImagePolicy,
    pub device: &'a Device,
    pub train_device: Device,
}

impl FinetuneJob<'_> {
    fn stage(&self, step: usize) -> (usize, usize, &StageConfig) {
        // Every step of the run lies in a stage: the run's steps are the stages' sum.
        let (index, in_stage) = self.config.stage_at(step).unwrap_or((0, 0));
        (index, in_stage, &self.config.stages[index])
    }
}

/// What a step's losses are averaged over: its supervised tokens and its scoring answers,
/// over every replica.
pub struct StepScale {
    tokens: usize,
    scores: usize,
}

impl StepScale {
    /// Never 0: a step without scoring answers divides their (empty) sum by 1.
    fn tokens(&self) -> f64 {
        self.tokens.max(1) as f64
    }

    fn scores(&self) -> f64 {
        self.scores.max(1) as f64
    }
}

impl Summed for StepScale {
    fn sums(&self) -> Vec<f64> {
        vec![self.tokens as f64, self.scores as f64]
    }

    fn set_sums(&mut self, sums: &[f64]) {
        if let [tokens, scores] = sums {
            self.tokens = *tokens as usize;
            self.scores = *scores as usize;
        }
    }
}

/// Every name a step's `FinetuneTally::sums` may hold, in one order for every rank (a rank's
/// micro-batches need not meet every task).
fn tally_names() -> impl Iterator<Item = &'static str> {
    Task::ALL
        .iter()
        .map(|t| t.name())
        .chain(["score_emd", "score_regression"])
}

#[derive(Default)]
pub struct FinetuneTally {
    /// Per task (and score loss): the sum and the count.
    sums: BTreeMap<String, (f64, usize)>,
    /// Mean cross-entropy over the step's supervised tokens.
    token_loss: f64,
    /// The score heads' weighted losses.
    score_loss: f64,
    tokens: usize,
    /// Every token the step read, prompts included.
    read: usize,
    conversations: usize,
}

impl Summed for FinetuneTally {
    fn sums(&self) -> Vec<f64> {
        let mut sums = vec![
            self.token_loss,
            self.score_loss,
            self.tokens as f64,
            self.read as f64,
            self.conversations as f64,
        ];
        for name in tally_names() {
            let (sum, count) = self.sums.get(name).copied().unwrap_or_default();
            sums.extend([sum, count as f64]);
        }
        sums
    }

    fn set_sums(&mut self, sums: &[f64]) {
        let (Some(head), Some(named)) = (sums.get(..5), sums.get(5..)) else {
            return;
        };
        self.token_loss = head[0];
        self.score_loss = head[1];
        [self.tokens, self.read, self.conversations] =
            [head[2], head[3], head[4]].map(|v| v as usize);
        self.sums.clear();
        for (name, pair) in tally_names().zip(named.chunks_exact(2)) {
            if pair[1] > 0.0 {
                self.sums
                    .insert(name.to_string(), (pair[0], pair[1] as usize));
            }
        }
    }
}

impl Tally for FinetuneTally {
    fn total(&self) -> f64 {
        self.token_loss + self.score_loss
    }

    fn examples(&self) -> usize {
        self.conversations
    }
}

impl Job for FinetuneJob<'_> {
    type Model = Calm;
    type Batch = PreparedBatch;
    type Scale = StepScale;
    type Tally = FinetuneTally;
    type Fields = FinetuneFields;
    type Error = FinetuneError;

    fn micro_batch(&self, index: usize) -> Built {
        let f = self.config;
        let (stage, _, _) = self.stage(index / f.gradient_accumulation);
        build_micro_batch(
            self.preparer,
            &self.mixes[stage],
            f.batch_size,
            Stream::StageSamples.seed(self.seed, stage as u64),
            index,
            self.policy,
            self.device,
        )
    }

    fn lr(&self, step: usize) -> f64 {
        let (_, in_stage, stage) = self.stage(step);
        stage.schedule.lr_at(in_stage, stage.steps)
    }

    fn begin_step(&self, model: Calm, step: usize, first: bool) -> Calm {
        let (index, _, stage) = self.stage(step);
        let previous = step.checked_sub(1).map(|s| self.stage(s).0);
        if first || previous != Some(index) {
            set_trainable(model, &stage.trainable)
        } else {
            model
        }
    }

    fn scale(&self, batches: &[PreparedBatch]) -> StepScale {
        StepScale {
            tokens: batches.iter().map(|p| p.target_tasks().len()).sum(),
            scores: batches
                .iter()
                .map(|p| p.scores.iter().flatten().count())
                .sum(),
        }
    }

    fn loss(
        &self,
        model: &Calm,
        prepared: PreparedBatch,
        scale: &StepScale,
        tally: &mut FinetuneTally,
    ) -> Tensor<1> {
        let weights = &self.config.score_heads;
        let batch = prepared.to_device(&self.train_device, true);
        let losses = model.losses(&batch, !weights.train_model);
        let token_losses = losses.tokens;
        let values: Vec<f32> = token_losses.clone().into_data().iter::<f32>().collect();
        for (task, value) in prepared.target_tasks().into_iter().zip(&values) {
            let entry = tally.sums.entry(task.name().to_string()).or_default();
            entry.0 += f64::from(*value);
            entry.1 += 1;
            tally.token_loss += f64::from(*value) / scale.tokens();
        }
        tally.tokens += values.len();
        tally.read += prepared.rows.iter().map(|r| r.len()).sum::<usize>();
        tally.conversations += prepared.rows.len();
        // Token-weighted over the whole step, as one large batch would be.
        let mut loss = token_losses.sum() / scale.tokens();
        if let Some((emd, squared)) = losses.scores {
            for (name, part, weight) in [
                ("score_emd", emd, weights.distribution_weight),
                ("score_regression", squared, weights.regression_weight),
            ] {
                let values: Vec<f32> = part.clone().into_data().iter::<f32>().collect();
                let entry = tally.sums.entry(name.to_string()).or_default();
                entry.0 += values.iter().map(|&v| f64::from(v)).sum::<f64>();
                entry.1 += values.len();
                tally.score_loss +=
                    weight * values.iter().map(|&v| f64::from(v)).sum::<f64>() / scale.scores();
                // Averaged over the step's scoring answers, as the tokens are.
                loss = loss + part.sum() * (weight / scale.scores());
            }
        }
        loss
    }

    /// Heads that do not train the model are stepped apart, clipped on their own: in the
    /// global norm they would rescale the model's step, and the words would no longer be
    /// those a run without heads learns.
    fn clipped_apart(&self, model: &Calm, grads: &mut GradientsParams) -> Option<GradientsParams> {
        let head = model.score_head.as_ref()?;
        if self.config.score_heads.train_model {
            return None;
        }
        let mut apart = GradientsParams::new();
        move_grads(head, grads, &mut apart);
        Some(apart)
    }

    fn lr_groups(
        &self,
        model: &Calm,
        step: usize,
        grads: &mut GradientsParams,
    ) -> Vec<(f64, GradientsParams)> {
        let (_, _, stage) = self.stage(step);
        if stage.trainable.mfam && stage.mfam_lr_scale != 1.0 {
            vec![(stage.mfam_lr_scale, take_qformer_grads(&model.mfam, grads))]
        } else {
            Vec::new()
        }
    }

    fn line(
        &self,
        step: usize,
        lr: f64,
        grad_norm: f64,
        tally: FinetuneTally,
        seconds: f64,
    ) -> StepMetrics {
        let (_, _, stage) = self.stage(step);
        StepMetrics {
            step,
            lr,
            loss: tally.token_loss,
            losses: tally
                .sums
                .into_iter()
                .map(|(k, (s, n))| (k, s / n.max(1) as f64))
                .collect(),
            grad_norm,
            fields: FinetuneFields {
                stage: stage.name.clone(),
                tokens: tally.tokens,
                tokens_per_second: tally.read as f64 / seconds.max(1e-9),
            },
        }
    }
}

pub type Built = Result<(PreparedBatch, Vec<String>), FinetuneError>;

pub fn build_micro_batch(
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
    let end = start + trainer::replacement_budget(batch, mix_.len());
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
                        // Samples hold a query and its rated shots: far fewer than u32::MAX.
                        let image_stream = Stream::SampleImage {
                            image: u32::try_from(k).unwrap_or(u32::MAX),
                        };
                        preparer
                            .image(image, image_stream.seed(seed, sample_index as u64))
                            .map_err(|e| e.to_string())
                    })
                    .collect::<Result<Vec<Arc<_>>, String>>()?;
                Ok((sample, images))
            });
        match made {
            Ok(s) => samples.push(s),
            Err(reason) => match policy {
                BadImagePolicy::Skip => trainer::note_skipped(&mut skipped, vec![reason]),
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
