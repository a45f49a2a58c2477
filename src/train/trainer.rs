//! The one training loop of calm, shared by pretraining (stage 1) and instruction tuning
//! (stage 2), in the shape of nanoGPT's loop and burn's `Learner` without its callbacks: a
//! loader thread builds the next micro-batches while the current ones train; each optimiser
//! step accumulates the gradients of `gradient_accumulation` micro-batches, checks the loss is
//! finite, clips the global gradient norm as `torch.nn.utils.clip_grad_norm_` does, and steps
//! Adam with a learning rate per parameter group; then it logs (`metrics.jsonl`, TensorBoard,
//! the progress line) and writes the checkpoints on their cadence, pruning old ones.
//!
//! What differs between the stages comes from a `Job`: how micro-batch `k` is built (a pure
//! function of the seed and `k`, so a resumed run computes the same losses as one never
//! stopped), its loss, which parameters train in a step and with which learning rate. The
//! replicas of data-parallel training meet in `Replicas::reduce`, the one call between
//! accumulation and clipping (docs/design.md §3.1).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::checkpoints::{self, Kept, TrainCheckpointError, TrainerState};
use super::metrics::{self, MetricsError, StepLine};
use super::optim::{clip_global_norm, global_grad_norm};
use super::progress::Progress;
use super::tensorboard::{EventError, EventWriter};
use crate::run::{RunError, RunLayout, RunLock};

#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Checkpoint(#[from] TrainCheckpointError),
    #[error(transparent)]
    Events(#[from] EventError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Save(#[from] crate::io::checkpoint::CheckpointError),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the batch-building thread stopped unexpectedly")]
    WorkerLost,
    #[error("the loss became {value} at step {step}; lower {lr_key}?")]
    NotFinite {
        step: usize,
        value: f64,
        lr_key: &'static str,
    },
    #[error("{0}: no steps recorded")]
    NoSteps(std::path::PathBuf),
}

/// The loop's settings, which each stage's config supplies.
#[derive(Debug, Clone)]
pub struct LoopSettings {
    /// Optimiser steps of the whole run.
    pub steps: usize,
    pub gradient_accumulation: usize,
    pub max_grad_norm: Option<f64>,
    /// A checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: usize,
    /// Checkpoints kept (0: all).
    pub keep_checkpoints: usize,
    /// Micro-batches the loader thread may build ahead.
    pub prefetch_batches: usize,
    /// Which parameters checkpoints and the final model hold.
    pub kept: Kept,
    /// The setting a diverging run should lower, named in the error.
    pub lr_key: &'static str,
    /// What the throughput counts in the progress line, e.g. "img/s".
    pub throughput_unit: &'static str,
}

/// What the micro-batches of one step add up to.
pub trait Tally: Default {
    /// The step's loss, for the finiteness check and the progress line.
    fn total(&self) -> f64;
    /// Examples (images, conversations) the step trained on.
    fn examples(&self) -> usize;
}

/// One line of `metrics.jsonl` per optimiser step: what every stage records, then the stage's
/// own fields (`Job::Fields`) beside them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord<F> {
    /// 0-based optimiser step.
    pub step: usize,
    pub lr: f64,
    /// The loss that was minimised (fine-tuning: its token part; the score heads' are among
    /// `losses`).
    pub loss: f64,
    /// Each named loss of the step, unweighted.
    pub losses: BTreeMap<String, f64>,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    #[serde(flatten)]
    pub fields: F,
}

/// A stage's own fields of a metrics line.
pub trait StepFields: Serialize + DeserializeOwned + Clone {
    /// The TensorBoard tag of the step's throughput and its value.
    fn throughput(&self) -> (&'static str, f64);
}

impl<F: StepFields> StepLine for StepRecord<F> {
    fn step(&self) -> usize {
        self.step
    }
}

/// What a training stage supplies to the loop.
pub trait Job: Sync {
    type Model: Module;
    type Batch: Send;
    /// What a step's loss is normalised by (e.g. its supervised tokens), known once all its
    /// micro-batches are built; with data parallelism, the sum over replicas.
    type Scale;
    type Tally: Tally;
    type Fields: StepFields;
    type Error: From<TrainerError> + Send;

    /// Micro-batch `index` of the run and the items it had to skip; called on the loader
    /// thread, in order.
    fn micro_batch(&self, index: usize) -> Result<(Self::Batch, Vec<String>), Self::Error>;

    /// The learning rate of `step`.
    fn lr(&self, step: usize) -> f64;

    /// The model about to train `step`, e.g. with a stage's parameters set trainable; `first`
    /// for the first step this process runs.
    fn begin_step(&self, model: Self::Model, _step: usize, _first: bool) -> Self::Model {
        model
    }

    fn scale(&self, batches: &[Self::Batch]) -> Self::Scale;

    /// The loss of one micro-batch, already divided so that the step's losses add up to its
    /// mean; records what it measured in `tally`.
    fn loss(
        &self,
        model: &Self::Model,
        batch: Self::Batch,
        scale: &Self::Scale,
        tally: &mut Self::Tally,
    ) -> Tensor<1>;

    /// Gradients taken out of the step's before clipping: they are clipped on their own, are
    /// not counted in the step's norm, and step at the step's learning rate.
    fn clipped_apart(
        &self,
        _model: &Self::Model,
        _grads: &mut GradientsParams,
    ) -> Option<GradientsParams> {
        None
    }

    /// Gradients taken out of the clipped rest that step at `lr` times their factor.
    fn lr_groups(
        &self,
        _model: &Self::Model,
        _step: usize,
        _grads: &mut GradientsParams,
    ) -> Vec<(f64, GradientsParams)> {
        Vec::new()
    }

    /// The metrics line of a finished step.
    fn line(
        &self,
        step: usize,
        lr: f64,
        grad_norm: f64,
        tally: Self::Tally,
        seconds: f64,
    ) -> StepRecord<Self::Fields>;
}

/// The replicas a step's gradients are summed over. Data-parallel training adds its
/// collectives here; one process has nothing to sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Replicas {
    #[default]
    Single,
}

impl Replicas {
    /// The gradients summed over every replica.
    pub fn reduce(&self, grads: GradientsParams) -> Result<GradientsParams, TrainerError> {
        match self {
            Self::Single => Ok(grads),
        }
    }
}

/// What a finished run reports.
#[derive(Debug)]
pub struct Trained<M, F> {
    pub model: M,
    /// Optimiser steps of the whole run.
    pub steps: usize,
    /// The step this process resumed from, if it did.
    pub resumed_from: Option<usize>,
    pub first_step: StepRecord<F>,
    pub last_step: StepRecord<F>,
    /// Seconds spent in the loop by this process.
    pub train_seconds: f64,
    /// Examples this process trained on.
    pub examples_seen: usize,
    /// Items that could not be read, with why, over the whole run.
    pub skipped: Vec<String>,
}

impl<M, F> Trained<M, F> {
    /// The run's `summary.json`: `train_photos` it trained on, the photos it `held_out`, and
    /// what the stage adds (`stage`).
    pub fn summary<X>(
        self,
        train_photos: usize,
        held_out: &[PathBuf],
        stage: X,
    ) -> TrainSummary<F, X> {
        TrainSummary {
            steps: self.steps,
            resumed_from: self.resumed_from,
            train_photos,
            held_out: held_out.iter().map(|p| p.display().to_string()).collect(),
            first_step: self.first_step,
            last_step: self.last_step,
            train_seconds: self.train_seconds,
            skipped: self.skipped,
            stage,
        }
    }
}

/// What `summary.json` holds after training (the commands add their evaluation): what every
/// stage reports, then the stage's own fields.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary<F, X> {
    pub steps: usize,
    /// The step the last resumption started from, if the run was resumed.
    pub resumed_from: Option<usize>,
    pub train_photos: usize,
    /// The photos held out of training.
    pub held_out: Vec<String>,
    pub first_step: StepRecord<F>,
    pub last_step: StepRecord<F>,
    /// Seconds spent in the loop by this process.
    pub train_seconds: f64,
    /// Items that could not be read, with why, over the whole run.
    pub skipped: Vec<String>,
    #[serde(flatten)]
    pub stage: X,
}

/// A run directory being trained: holds its lock from `open` to the end.
pub struct Trainer {
    layout: RunLayout,
    settings: LoopSettings,
    optimizer: ModuleOptimizer,
    state: TrainerState,
    resumed_from: Option<usize>,
    resume: bool,
    _lock: RunLock,
}

impl Trainer {
    /// Takes the run's lock and deletes what a killed process left half-written.
    pub fn open(
        run: &Path,
        settings: LoopSettings,
        optimizer: ModuleOptimizer,
        resume: bool,
    ) -> Result<Self, TrainerError> {
        let lock = RunLock::acquire(run)?;
        checkpoints::remove_debris(run)?;
        Ok(Self {
            layout: RunLayout::new(run),
            settings,
            optimizer,
            state: TrainerState::default(),
            resumed_from: None,
            resume,
            _lock: lock,
        })
    }

    /// Records items skipped before training (e.g. held-out photos that could not be copied).
    pub fn note_skipped(&mut self, skipped: Vec<String>) {
        note_skipped(&mut self.state.skipped, skipped);
    }

    /// With `--resume`, reads the latest checkpoint into `model` and the optimiser, and cuts
    /// `metrics.jsonl` back to its step; returns the step resumed from. A run killed before
    /// its first checkpoint resumes from step 0 (`None`).
    pub fn restore<M: Module, L: StepLine>(
        &mut self,
        model: &mut M,
    ) -> Result<Option<usize>, TrainerError> {
        if !self.resume {
            return Ok(None);
        }
        if let Some(dir) = checkpoints::latest(self.layout.root())? {
            // Still fresh here: the clone copies no state.
            let optimizer = self.optimizer.clone();
            (self.optimizer, self.state) =
                checkpoints::load_matching(&dir, model, optimizer, self.settings.kept)?;
            self.resumed_from = Some(self.state.step);
        }
        metrics::keep_before::<L>(&self.layout.metrics(), self.state.step)?;
        Ok(self.resumed_from)
    }

    /// Trains `model` from the restored step to the last, then saves the final model.
    pub fn run<J: Job>(
        mut self,
        job: &J,
        mut model: J::Model,
    ) -> Result<Trained<J::Model, J::Fields>, J::Error> {
        let s = self.settings.clone();
        let events_dir = self.layout.events();
        std::fs::create_dir_all(&events_dir).map_err(|source| TrainerError::Io {
            path: events_dir.clone(),
            source,
        })?;
        let mut log = StepLog::open(&self.layout)?;
        let accumulation = s.gradient_accumulation;
        let first_micro = self.state.micro_batches;
        let total_micro = s.steps * accumulation;
        let progress = Progress::new(s.steps, self.state.step, s.throughput_unit);
        let replicas = Replicas::Single;
        let started = Instant::now();
        let mut examples_seen = 0;
        let first_step = self.state.step;

        let model = std::thread::scope(|scope| -> Result<J::Model, J::Error> {
            let (sender, receiver) = sync_channel(s.prefetch_batches.max(1));
            scope.spawn(move || {
                for index in first_micro..total_micro {
                    if sender.send(job.micro_batch(index)).is_err() {
                        break;
                    }
                }
            });
            for step in first_step..s.steps {
                model = job.begin_step(model, step, step == first_step);
                let t0 = Instant::now();
                let lr = job.lr(step);
                let mut batches = Vec::with_capacity(accumulation);
                for _ in 0..accumulation {
                    let (batch, skipped) =
                        receiver.recv().map_err(|_| TrainerError::WorkerLost)??;
                    note_skipped(&mut self.state.skipped, skipped);
                    batches.push(batch);
                }
                let scale = job.scale(&batches);
                let mut tally = J::Tally::default();
                let mut accumulator = GradientsAccumulator::new();
                for batch in batches {
                    let loss = job.loss(&model, batch, &scale, &mut tally);
                    let grads = GradientsParams::from_grads(loss.backward(), &model);
                    accumulator.accumulate(&model, grads);
                }
                let total = tally.total();
                if !total.is_finite() {
                    return Err(TrainerError::NotFinite {
                        step,
                        value: total,
                        lr_key: s.lr_key,
                    }
                    .into());
                }
                let mut grads = replicas.reduce(accumulator.grads())?;
                let mut apart = job.clipped_apart(&model, &mut grads);
                if let (Some(apart), Some(max)) = (&mut apart, s.max_grad_norm) {
                    clip_global_norm(&model, apart, max);
                }
                let grad_norm = match s.max_grad_norm {
                    Some(max) => clip_global_norm(&model, &mut grads, max),
                    None => global_grad_norm(&model, &grads),
                };
                if let Some(apart) = apart.filter(|g| !g.is_empty()) {
                    model = self.optimizer.step(lr, model, apart);
                }
                for (factor, group) in job.lr_groups(&model, step, &mut grads) {
                    model = self.optimizer.step(lr * factor, model, group);
                }
                model = self.optimizer.step(lr, model, grads);
                self.state.step = step + 1;
                self.state.micro_batches += accumulation;
                examples_seen += tally.examples();
                let line = job.line(step, lr, grad_norm, tally, t0.elapsed().as_secs_f64());
                log.write(&line)?;
                progress.step(step, line.loss, lr, line.fields.throughput().1);
                let due =
                    s.checkpoint_every > 0 && self.state.step.is_multiple_of(s.checkpoint_every);
                if due || self.state.step == s.steps {
                    log.events.flush().map_err(TrainerError::from)?;
                    checkpoints::save_matching(
                        self.layout.root(),
                        &model,
                        s.kept,
                        &self.optimizer,
                        &self.state,
                        s.keep_checkpoints,
                    )
                    .map_err(TrainerError::from)?;
                }
            }
            Ok(model)
        })?;
        let train_seconds = started.elapsed().as_secs_f64();
        crate::io::checkpoint::save_module_matching(
            &model,
            &self.layout.final_model(),
            s.kept.predicate(),
        )
        .map_err(TrainerError::from)?;
        let metrics_path = self.layout.metrics();
        let all: Vec<StepRecord<J::Fields>> =
            metrics::read(&metrics_path).map_err(TrainerError::from)?;
        let (Some(first), Some(last)) = (all.first().cloned(), all.last().cloned()) else {
            return Err(TrainerError::NoSteps(metrics_path).into());
        };
        Ok(Trained {
            model,
            steps: s.steps,
            resumed_from: self.resumed_from,
            first_step: first,
            last_step: last,
            train_seconds,
            examples_seen,
            skipped: self.state.skipped,
        })
    }
}

/// `metrics.jsonl` (appended and flushed per step, so a killed run keeps every finished
/// step) and the TensorBoard events.
struct StepLog {
    events: EventWriter,
    metrics: File,
    path: std::path::PathBuf,
}

impl StepLog {
    fn open(layout: &RunLayout) -> Result<Self, TrainerError> {
        let path = layout.metrics();
        let metrics = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| TrainerError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(Self {
            events: EventWriter::create(&layout.events())?,
            metrics,
            path,
        })
    }

    fn write<F: StepFields>(&mut self, line: &StepRecord<F>) -> Result<(), TrainerError> {
        let step = line.step as i64;
        self.events.scalar("loss/total", step, line.loss as f32)?;
        for (name, value) in &line.losses {
            self.events
                .scalar(&format!("loss/{name}"), step, *value as f32)?;
        }
        self.events.scalar("lr", step, line.lr as f32)?;
        self.events
            .scalar("grad_norm", step, line.grad_norm as f32)?;
        let (tag, value) = line.fields.throughput();
        self.events
            .scalar(&format!("throughput/{tag}"), step, value as f32)?;
        Ok(metrics::append(&mut self.metrics, &self.path, line)?)
    }
}

/// How many draws of the stream a micro-batch of `batch` may make when items fail to load:
/// its own and a whole epoch's worth (`items`) more, after which the data is unusable.
pub fn replacement_budget(batch: usize, items: usize) -> usize {
    batch.saturating_add(items)
}

/// Adds the items a micro-batch skipped to a run's list, each once, however many epochs
/// meet it.
pub fn note_skipped(list: &mut Vec<String>, skipped: Vec<String>) {
    for s in skipped {
        if !list.contains(&s) {
            list.push(s);
        }
    }
}
