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
use super::progress::Progress;
use super::replicas::Replicas;
use super::resident;
use super::tensorboard::{EventError, EventWriter};
use crate::distributed::{DistributedError, World, ZeroStage};
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
    #[error(transparent)]
    Distributed(#[from] DistributedError),
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
    /// The key of `gradient_accumulation`, named when the ranks cannot split it.
    pub accumulation_key: &'static str,
    /// Replicas compare their parameters every this many steps (0: never).
    pub check_every: usize,
    /// What the replicas shard of the optimiser's state.
    pub zero: ZeroStage,
    /// What the throughput counts in the progress line, e.g. "img/s".
    pub throughput_unit: &'static str,
}

/// Counts and sums that replicas add up: a step's tally, or what its losses are normalised
/// by. Every rank lists the same values in the same order.
pub trait Summed {
    fn sums(&self) -> Vec<f64>;
    /// Takes the sums over every replica, in the order `sums` gave them.
    fn set_sums(&mut self, sums: &[f64]);
}

impl Summed for () {
    fn sums(&self) -> Vec<f64> {
        Vec::new()
    }

    fn set_sums(&mut self, _: &[f64]) {}
}

/// What the micro-batches of one step add up to.
pub trait Tally: Default + Summed {
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
    type Scale: Summed;
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

/// What a finished run of `J` reports.
pub type JobTrained<J> = Trained<<J as Job>::Model, <J as Job>::Fields>;

/// A process's peak resident size in bytes, before its training loop (loading weights and
/// data) and in it (`train::resident`); `None` where the system does not say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeakRss {
    pub loading_bytes: Option<u64>,
    pub training_bytes: Option<u64>,
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
    /// This process's peak resident size before the loop (loading) and in it (Linux only).
    pub peak_rss: PeakRss,
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
            peak_rss: self.peak_rss,
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
    /// Rank 0's peak resident size while loading and while training.
    pub peak_rss: PeakRss,
    /// Items that could not be read, with why, over the whole run.
    pub skipped: Vec<String>,
    #[serde(flatten)]
    pub stage: X,
}

/// The order in which a rank computes its `local` micro-batches of a step: with a power of two,
/// bit-reversed (0, 2, 1, 3 of four), so that `Pairwise` adds the even ones, then the odd
/// ones, then both: the tree whose subtrees are the ranks' shares (rank r of W holds every
/// W-th micro-batch from r), which W ranks therefore compute exactly as one process does.
/// Building micro-batch k is a pure function of k, so the order changes nothing else.
pub fn step_order(local: usize) -> Vec<usize> {
    if !local.is_power_of_two() || local < 4 {
        return (0..local).collect();
    }
    let bits = local.trailing_zeros();
    (0..local)
        .map(|j| j.reverse_bits() >> (usize::BITS - bits))
        .collect()
}

/// A step's gradients and scalars, added in pairs as they arrive (a binary counter: two
/// partial sums of the same size are added as soon as both exist), which keeps at most
/// log2(n) partial sums and fixes the order of every addition.
#[derive(Default)]
struct Pairwise {
    stack: Vec<(u32, GradientsParams, Vec<f64>)>,
}

impl Pairwise {
    fn push<M: Module>(&mut self, model: &M, grads: GradientsParams, sums: Vec<f64>) {
        let mut item = (0, grads, sums);
        while self.stack.last().is_some_and(|top| top.0 == item.0) {
            let Some((level, grads, sums)) = self.stack.pop() else {
                break;
            };
            item = (
                level + 1,
                add(model, grads, item.1),
                add_sums(sums, &item.2),
            );
        }
        self.stack.push(item);
    }

    /// The sum of everything pushed: what is left is added from the left.
    fn finish<M: Module>(self, model: &M) -> (GradientsParams, Vec<f64>) {
        let mut items = self.stack.into_iter();
        let Some((_, mut grads, mut sums)) = items.next() else {
            return (GradientsParams::new(), Vec::new());
        };
        for (_, g, s) in items {
            grads = add(model, grads, g);
            sums = add_sums(sums, &s);
        }
        (grads, sums)
    }
}

/// `a + b` for every parameter either holds.
fn add<M: Module>(model: &M, a: GradientsParams, b: GradientsParams) -> GradientsParams {
    let mut sum = GradientsAccumulator::new();
    sum.accumulate(model, a);
    sum.accumulate(model, b);
    sum.grads()
}

fn add_sums(mut a: Vec<f64>, b: &[f64]) -> Vec<f64> {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
    a
}

/// A run directory being trained: its leader (rank 0, or the one process) holds its lock
/// from `open` to the end and alone writes to it.
pub struct Trainer<'w> {
    layout: RunLayout,
    settings: LoopSettings,
    optimizer: ModuleOptimizer,
    state: TrainerState,
    resumed_from: Option<usize>,
    resume: bool,
    world: &'w World,
    _lock: Option<RunLock>,
}

impl<'w> Trainer<'w> {
    /// On the leader, takes the run's lock and deletes what a killed process left
    /// half-written. Fails when the ranks cannot split a step evenly.
    pub fn open(
        run: &Path,
        settings: LoopSettings,
        optimizer: ModuleOptimizer,
        resume: bool,
        world: &'w World,
    ) -> Result<Self, TrainerError> {
        world.check_divides(settings.accumulation_key, settings.gradient_accumulation)?;
        let lock = if world.is_leader() {
            let lock = RunLock::acquire(run)?;
            checkpoints::remove_debris(run)?;
            Some(lock)
        } else {
            None
        };
        Ok(Self {
            layout: RunLayout::new(run),
            settings,
            optimizer,
            state: TrainerState::default(),
            resumed_from: None,
            resume,
            world,
            _lock: lock,
        })
    }

    /// Records items skipped before training (e.g. held-out photos that could not be copied).
    pub fn note_skipped(&mut self, skipped: Vec<String>) {
        note_skipped(&mut self.state.skipped, skipped);
    }

    /// With `--resume`, reads the latest checkpoint into `model` and the optimiser, and (on
    /// the leader) cuts `metrics.jsonl` back to its step; returns the step resumed from. A run
    /// killed before its first checkpoint resumes from step 0 (`None`). Every rank reads the
    /// same checkpoint, whatever the number of ranks that wrote it: its step counts global
    /// micro-batches.
    pub fn restore<M: Module, L: StepLine>(
        &mut self,
        model: &mut M,
    ) -> Result<Option<usize>, TrainerError> {
        if !self.resume {
            return Ok(None);
        }
        // The leader has removed any half-written checkpoint before the others look.
        self.world.barrier();
        let latest = checkpoints::latest(self.layout.root())?;
        let name = latest
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        self.world
            .check_same("the checkpoint to resume from", name.as_bytes())?;
        if let Some(dir) = latest {
            // Still fresh here: the clone copies no state.
            let optimizer = self.optimizer.clone();
            // Sharded, a rank keeps the state of the parameters it now steps, whatever the
            // number of ranks that saved it.
            let mine = Replicas::new(self.world, self.settings.zero).owned(&*model);
            let owned = |id: u64| {
                let index = usize::try_from(id).ok();
                mine.as_ref()
                    .is_none_or(|m| index.and_then(|i| m.get(i)).is_some_and(|&own| own))
            };
            let filter: checkpoints::StateFilter<'_> = mine.is_some().then_some(&owned);
            (self.optimizer, self.state) =
                checkpoints::load_matching(&dir, model, optimizer, self.settings.kept, filter)?;
            self.resumed_from = Some(self.state.step);
        }
        if self.world.is_leader() {
            metrics::keep_before::<L>(&self.layout.metrics(), self.state.step)?;
        }
        Ok(self.resumed_from)
    }

    /// Every rank's share of the optimiser state written into the folder the leader staged
    /// for this step's checkpoint, whose path it returns. The ranks wait for each other at the
    /// end: a rank that fails to write stops the job before the leader commits.
    fn stage_shard(&self) -> Result<std::path::PathBuf, TrainCheckpointError> {
        let staged = if self.world.is_leader() {
            checkpoints::stage(self.layout.root(), self.state.step)?
        } else {
            std::path::PathBuf::new()
        };
        let staged = std::path::PathBuf::from(
            String::from_utf8_lossy(
                &self
                    .world
                    .broadcast(staged.to_string_lossy().into_owned().into_bytes()),
            )
            .into_owned(),
        );
        let shard = checkpoints::optimizer_shard(self.world.rank(), self.world.size());
        checkpoints::write_optimizer(&staged.join(shard), &self.optimizer)?;
        self.world.barrier();
        Ok(staged)
    }

    /// Trains `model` from the restored step to the last, then saves the final model. Every
    /// rank computes its share of each step's micro-batches (rank r: r, r + W, ...), the
    /// replicas sum their gradients, and each takes the same optimiser step; the leader alone
    /// logs and writes checkpoints, and alone returns what the run did (`None` elsewhere).
    pub fn run<J: Job>(
        mut self,
        job: &J,
        mut model: J::Model,
    ) -> Result<Option<JobTrained<J>>, J::Error> {
        let s = self.settings.clone();
        let leader = self.world.is_leader();
        let mut log = if leader {
            let events_dir = self.layout.events();
            std::fs::create_dir_all(&events_dir).map_err(|source| TrainerError::Io {
                path: events_dir.clone(),
                source,
            })?;
            Some(StepLog::open(&self.layout)?)
        } else {
            None
        };
        let accumulation = s.gradient_accumulation;
        let (rank, ranks) = (self.world.rank(), self.world.size());
        let local_accumulation = accumulation / ranks;
        let order = step_order(local_accumulation);
        let progress = leader.then(|| Progress::new(s.steps, self.state.step, s.throughput_unit));
        let replicas = Replicas::new(self.world, s.zero);
        let loading_bytes = resident::peak_bytes();
        // What loading freed (a GGUF file's bytes, dequantisation buffers) is not the loop's.
        resident::return_freed_memory();
        resident::reset_peak();
        let started = Instant::now();
        let mut examples_seen = 0;
        let first_step = self.state.step;

        // Every replica must start from the same weights (e.g. the same pretraining run).
        replicas
            .check_same_params(&model, first_step)
            .map_err(TrainerError::from)?;
        let model = std::thread::scope(|scope| -> Result<J::Model, J::Error> {
            let (sender, receiver) = sync_channel(s.prefetch_batches.max(1));
            let order = &order;
            scope.spawn(move || {
                for step in first_step..s.steps {
                    for &j in order {
                        let index = step * accumulation + rank + j * ranks;
                        if sender.send(job.micro_batch(index)).is_err() {
                            return;
                        }
                    }
                }
            });
            for step in first_step..s.steps {
                model = job.begin_step(model, step, step == first_step);
                let t0 = Instant::now();
                let lr = job.lr(step);
                let mut batches = Vec::with_capacity(local_accumulation);
                for _ in 0..local_accumulation {
                    let (batch, skipped) =
                        receiver.recv().map_err(|_| TrainerError::WorkerLost)??;
                    note_skipped(&mut self.state.skipped, skipped);
                    batches.push(batch);
                }
                let scale = replicas.sum(job.scale(&batches));
                let mut first_tally = None;
                let mut partials = Pairwise::default();
                // ZeRO stage 2: each micro-batch's gradients leave for their owners at once.
                let mut share = replicas.shards_gradients().then(|| replicas.share(&model));
                for batch in batches {
                    let mut tally = J::Tally::default();
                    let loss = job.loss(&model, batch, &scale, &mut tally);
                    let mut grads = GradientsParams::from_grads(loss.backward(), &model);
                    if let Some(share) = &mut share {
                        replicas.add_to_share(&model, share, grads);
                        grads = GradientsParams::new();
                    }
                    partials.push(&model, grads, tally.sums());
                    first_tally.get_or_insert(tally);
                }
                let (grads, sums) = partials.finish(&model);
                // The first micro-batch's tally holds the step's names; the sums are the step's.
                let mut tally = first_tally.unwrap_or_default();
                tally.set_sums(&sums);
                let mut grads = match share {
                    Some(share) => replicas.finish_share(&model, share, &mut tally),
                    None => replicas.reduce(&model, grads, &mut tally),
                };
                let total = tally.total();
                if !total.is_finite() {
                    return Err(TrainerError::NotFinite {
                        step,
                        value: total,
                        lr_key: s.lr_key,
                    }
                    .into());
                }
                let mut apart = job.clipped_apart(&model, &mut grads);
                if let (Some(apart), Some(max)) = (&mut apart, s.max_grad_norm) {
                    replicas.clip(&model, apart, Some(max));
                }
                let grad_norm = replicas.clip(&model, &mut grads, s.max_grad_norm);
                if let Some(apart) = apart.filter(|g| !g.is_empty()) {
                    model = self.optimizer.step(lr, model, apart);
                }
                for (factor, group) in job.lr_groups(&model, step, &mut grads) {
                    model = self.optimizer.step(lr * factor, model, group);
                }
                model = self.optimizer.step(lr, model, grads);
                model = replicas.share_params(model);
                // Each step then starts from what the model holds, not from the fragments of
                // the steps before it: the process's peak is one step's.
                resident::return_freed_memory();
                self.state.step = step + 1;
                self.state.micro_batches += accumulation;
                examples_seen += tally.examples();
                let last = self.state.step == s.steps;
                if s.check_every > 0 && (self.state.step.is_multiple_of(s.check_every) || last) {
                    replicas
                        .check_same_params(&model, self.state.step)
                        .map_err(TrainerError::from)?;
                }
                let due = last
                    || (s.checkpoint_every > 0
                        && self.state.step.is_multiple_of(s.checkpoint_every));
                if due {
                    // Rank 0 records what every rank skipped.
                    for list in replicas.gather_skipped(&self.state.skipped) {
                        note_skipped(&mut self.state.skipped, list);
                    }
                }
                // Sharded, every rank writes its share of the optimiser state into the leader's
                // checkpoint before the leader names it `latest`.
                let staged = if due && replicas.sharded() {
                    Some(self.stage_shard().map_err(TrainerError::from)?)
                } else {
                    None
                };
                let Some(log) = &mut log else {
                    continue;
                };
                let line = job.line(step, lr, grad_norm, tally, t0.elapsed().as_secs_f64());
                log.write(&line)?;
                if let Some(progress) = &progress {
                    progress.step(step, line.loss, lr, line.fields.throughput().1);
                }
                if due {
                    log.events.flush().map_err(TrainerError::from)?;
                    match &staged {
                        Some(staged) => checkpoints::commit(
                            self.layout.root(),
                            staged,
                            &model,
                            s.kept,
                            &self.state,
                            s.keep_checkpoints,
                        ),
                        None => checkpoints::save_matching(
                            self.layout.root(),
                            &model,
                            s.kept,
                            &self.optimizer,
                            &self.state,
                            s.keep_checkpoints,
                        ),
                    }
                    .map_err(TrainerError::from)?;
                }
            }
            Ok(model)
        })?;
        let train_seconds = started.elapsed().as_secs_f64();
        let peak_rss = PeakRss {
            loading_bytes,
            training_bytes: resident::peak_bytes(),
        };
        if !leader {
            return Ok(None);
        }
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
        Ok(Some(Trained {
            model,
            steps: s.steps,
            resumed_from: self.resumed_from,
            first_step: first,
            last_step: last,
            train_seconds,
            peak_rss,
            examples_seen,
            skipped: self.state.skipped,
        }))
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

#[cfg(test)]
mod tests {
    use super::step_order;

    #[test]
    fn a_power_of_two_is_taken_in_bit_reversed_order_and_others_in_turn() {
        assert_eq!(step_order(1), [0]);
        assert_eq!(step_order(2), [0, 1]);
        assert_eq!(step_order(3), [0, 1, 2]);
        assert_eq!(step_order(4), [0, 2, 1, 3]);
        assert_eq!(step_order(6), [0, 1, 2, 3, 4, 5]);
        assert_eq!(step_order(8), [0, 4, 2, 6, 1, 5, 3, 7]);
    }

    /// The claim `step_order` and the ranks' recursive doubling rest on: with A micro-batches
    /// and W ranks (both powers of two), adding each rank's share in pairs (rank r holds
    /// r, r + W, ...) and then the ranks' sums with partners r ^ W/2, r ^ W/4, ... performs the
    /// same additions as one process adding all A in pairs, in `step_order(A)`.
    #[test]
    fn ranks_add_in_the_tree_one_process_adds_in() {
        // Values whose sum depends on the order of the additions in f32.
        // Large terms that cancel beside small ones: f32 loses the small ones in some orders.
        let g: Vec<f32> = (0..16)
            .map(|i| {
                let block = (i / 4) as f32 + 1.0;
                match i % 4 {
                    0 => 1e8 * block,
                    1 => 1.5 + block,
                    2 => -1e8 * block,
                    _ => 0.25 * block,
                }
            })
            .collect();
        let pairwise = |items: Vec<f32>| -> f32 {
            let mut stack: Vec<(u32, f32)> = Vec::new();
            for x in items {
                let mut item = (0, x);
                while stack.last().is_some_and(|top| top.0 == item.0) {
                    let (level, a) = stack.pop().unwrap_or_default();
                    item = (level + 1, a + item.1);
                }
                stack.push(item);
            }
            stack
                .into_iter()
                .map(|(_, x)| x)
                .fold(None, |acc: Option<f32>, x| Some(acc.map_or(x, |a| a + x)))
                .unwrap_or(0.0)
        };
        let a = g.len();
        let one = pairwise(step_order(a).into_iter().map(|k| g[k]).collect());
        let sequential: f32 = g.iter().sum();
        assert_ne!(
            one.to_bits(),
            sequential.to_bits(),
            "the values must make order matter"
        );
        for w in [2, 4, 8, 16] {
            let mut sums: Vec<f32> = (0..w)
                .map(|r| {
                    pairwise(
                        step_order(a / w)
                            .into_iter()
                            .map(|j| g[r + j * w])
                            .collect(),
                    )
                })
                .collect();
            let mut half = w / 2;
            while half >= 1 {
                sums = (0..w).map(|r| sums[r] + sums[r ^ half]).collect();
                half /= 2;
            }
            for s in sums {
                assert_eq!(s.to_bits(), one.to_bits(), "{w} ranks");
            }
        }
    }
}
