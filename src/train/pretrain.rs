//! Stage 1 of CALM: text-guided multi-scale self-supervised pretraining of the MFAM on
//! unlabeled photos (docs/design.md §2). Each micro-batch pairs photos with degraded copies
//! (`train::batch`); the loss (`train::objective`) aligns each level with its text cues,
//! regresses pixel attributes and ranks originals above copies. The loop follows CALM's
//! recipe (Adam, linear warm-up then cosine decay) with what long runs need: gradient
//! accumulation and global-norm clipping, a loader thread that prepares the next batches
//! while the current one trains, atomic checkpoints, and a `--resume` that continues exactly:
//! every micro-batch is a pure function of the seed and its index, and parameter ids are
//! numbered, so a resumed run computes the same losses as one never stopped.

use burn::tensor::{Device, Tensor};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::batch::{BatchBuilder, BatchContents, BatchError};
use super::checkpoints::{self, Kept, TrainCheckpointError};
use super::metrics::MetricsError;
use super::objective::{LossConfig, losses};
use super::optim::{OptimizerConfig, numbered_params};
use super::schedule::ScheduleConfig;
use super::tensorboard::EventError;
use super::trainer::{
    self, Job, LoopSettings, StepFields, StepRecord, Tally, Trainer, TrainerError,
};
use crate::config::{ExperimentConfig, Invalid};
use crate::data::attributes::{LOW_NAMES, MIDDLE_NAMES};
use crate::data::image::load_rgb;
use crate::data::selfsup::PairConfig;
use crate::data::{BadImagePolicy, DataError};
use crate::eval::degradations::DegradationEvalConfig;
use crate::io::checkpoint::CheckpointError;
use crate::io::encoders::{EncoderError, load_cue_encoder, load_image_encoder, text_encoder_dir};
use crate::io::hf::load_bert;
use crate::model::pretrain::{PretrainHeadsConfig, PretrainModel};
use crate::model::qformer::QFormerError;
use crate::model::text::TextEncoder;
use crate::model::vision::frozen::FrozenEncoder;
use crate::run::RunLayout;
use crate::streams::Stream;

// Short names for the messages below.
const HELD_OUT: &str = RunLayout::HELD_OUT;
const SPLIT: &str = RunLayout::SPLIT;

/// How the Q-Formers start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QFormerInit {
    /// From the text encoder's BERT, as BLIP-2 starts from bert-base.
    Bert,
    /// BERT's random initialisation (any width).
    Random,
}

/// The `pretrain:` section. Photos per micro-batch are `data.loader.batch_size`; each adds a
/// degraded copy, so a micro-batch holds twice as many images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainConfig {
    /// Optimiser steps.
    pub steps: usize,
    /// Micro-batches whose gradients are summed into one optimiser step.
    pub gradient_accumulation: usize,
    pub optimizer: OptimizerConfig,
    pub schedule: ScheduleConfig,
    /// Clip the global L2 norm of the gradients to this; `null` leaves them as they are.
    pub max_grad_norm: Option<f64>,
    /// Write a checkpoint every this many steps (and always at the end); 0 = only at the end.
    pub checkpoint_every: usize,
    /// Checkpoints kept, the newest; 0 keeps all.
    pub keep_checkpoints: usize,
    /// Photos held back from training (drawn with the seed) for `evaluate degradations`: a
    /// count (`hold_out: 5`) or a share of the photos found (`hold_out: 0.34`).
    pub hold_out: HoldOut,
    pub qformer_init: QFormerInit,
    pub losses: LossConfig,
    pub pairs: PairConfig,
    pub evaluation: DegradationEvalConfig,
}

impl Default for PretrainConfig {
    /// Sized for the main job: the sample photos on a 2-core CPU in under 10 minutes.
    fn default() -> Self {
        Self {
            steps: 120,
            gradient_accumulation: 1,
            optimizer: OptimizerConfig::default(),
            schedule: ScheduleConfig {
                peak_lr: 1e-4,
                warmup_steps: 10,
                min_lr_ratio: 0.0,
            },
            max_grad_norm: Some(1.0),
            checkpoint_every: 40,
            keep_checkpoints: 2,
            hold_out: HoldOut::default(),
            qformer_init: QFormerInit::Bert,
            losses: LossConfig::default(),
            pairs: PairConfig::default(),
            evaluation: DegradationEvalConfig::default(),
        }
    }
}

impl PretrainConfig {
    /// The training loop's settings for this section.
    pub fn loop_settings(&self, config: &ExperimentConfig) -> LoopSettings {
        LoopSettings {
            steps: self.steps,
            gradient_accumulation: self.gradient_accumulation,
            max_grad_norm: self.max_grad_norm,
            checkpoint_every: self.checkpoint_every,
            keep_checkpoints: self.keep_checkpoints,
            prefetch_batches: config.data.loader.prefetch_batches,
            kept: Kept::All,
            lr_key: "pretrain.schedule.peak_lr",
            throughput_unit: "img/s",
        }
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        use crate::train::schedule::{MAX_ACCUMULATION, MAX_STEPS};
        crate::model::size_within("pretrain.steps", self.steps, MAX_STEPS)?;
        crate::model::size_within(
            "pretrain.gradient_accumulation",
            self.gradient_accumulation,
            MAX_ACCUMULATION,
        )?;
        self.optimizer.validate("pretrain.optimizer")?;
        let s = &self.schedule;
        if !(s.peak_lr > 0.0 && s.peak_lr.is_finite()) {
            return Err(Invalid::new(
                "pretrain.schedule.peak_lr",
                "must be positive",
            ));
        }
        if !(0.0..=1.0).contains(&s.min_lr_ratio) {
            return Err(Invalid::new(
                "pretrain.schedule.min_lr_ratio",
                "must be within [0, 1]",
            ));
        }
        if s.warmup_steps > self.steps {
            return Err(Invalid::new(
                "pretrain.schedule.warmup_steps",
                format!("{} exceeds pretrain.steps = {}", s.warmup_steps, self.steps),
            ));
        }
        if let Some(max) = self.max_grad_norm
            && !(max > 0.0 && max.is_finite())
        {
            return Err(Invalid::new(
                "pretrain.max_grad_norm",
                "must be a finite positive number (or null)",
            ));
        }
        match self.hold_out {
            HoldOut::Count(0) => {
                return Err(Invalid::new(
                    "pretrain.hold_out",
                    "must hold out at least 1 photo: the run is evaluated on them",
                ));
            }
            HoldOut::Share(share) if !(share > 0.0 && share < 1.0) => {
                return Err(Invalid::new(
                    "pretrain.hold_out",
                    format!(
                        "{share:?} is neither a count of photos (a whole number: 5, not 5.0) nor a share within (0, 1)"
                    ),
                ));
            }
            _ => {}
        }
        let p = &self.pairs;
        if p.degradations.is_empty() {
            return Err(Invalid::new(
                "pretrain.pairs.degradations",
                "needs at least one kind",
            ));
        }
        if !(0.0 <= p.min_severity && p.min_severity <= p.max_severity && p.max_severity <= 1.0) {
            return Err(Invalid::new(
                "pretrain.pairs",
                "needs 0 <= min_severity <= max_severity <= 1",
            ));
        }
        let l = &self.losses;
        let weights = [
            ("itc_low", l.itc_low),
            ("itc_middle", l.itc_middle),
            ("itc_high", l.itc_high),
            ("attributes", l.attributes),
            ("ranking", l.ranking),
        ];
        for (name, w) in weights {
            if !(w >= 0.0 && w.is_finite()) {
                return Err(Invalid::new(
                    format!("pretrain.losses.{name}"),
                    "must be 0 or more",
                ));
            }
        }
        if weights.iter().all(|(_, w)| *w == 0.0) {
            return Err(Invalid::new("pretrain.losses", "every weight is 0"));
        }
        if !(l.temperature > 0.0 && l.temperature.is_finite()) {
            return Err(Invalid::new(
                "pretrain.losses.temperature",
                "must be a finite number above 0",
            ));
        }
        if self.evaluation.severities.is_empty() {
            return Err(Invalid::new(
                "pretrain.evaluation.severities",
                "needs at least one severity to evaluate the held-out photos at",
            ));
        }
        if self
            .evaluation
            .severities
            .iter()
            .any(|s| !(0.0..=1.0).contains(s))
        {
            return Err(Invalid::new(
                "pretrain.evaluation.severities",
                "must be within [0, 1]",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PretrainError {
    #[error(transparent)]
    Encoder(#[from] EncoderError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    TrainCheckpoint(#[from] TrainCheckpointError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("micro-batch {index}: {source}")]
    Batch { index: usize, source: BatchError },
    #[error(transparent)]
    QFormer(#[from] QFormerError),
    #[error(transparent)]
    Events(#[from] EventError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{found} photos found; pretraining needs at least 2 besides the {hold_out} held out (pretrain.hold_out)"
    )]
    TooFewPhotos { found: usize, hold_out: usize },
    #[error("{path}: {reason}")]
    BadPhoto { path: PathBuf, reason: String },
    #[error(
        "micro-batch {index}: no photo could be read in a whole epoch's worth of attempts (see the skipped photos)"
    )]
    EmptyBatch { index: usize },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Run(#[from] crate::run::RunError),
    #[error("no photos to evaluate")]
    NoPhotos,
    #[error(transparent)]
    Trainer(#[from] TrainerError),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> PretrainError + '_ {
    move |source| PretrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What pretraining keeps frozen: the image encoder, the text encoder of the cues, and the
/// folder of that text encoder (whose BERT the Q-Formers start from).
pub struct Frozen {
    pub encoder: FrozenEncoder,
    pub text: TextEncoder,
    pub text_dir: PathBuf,
}

impl Frozen {
    /// Loads both encoders as `model.weights` says (fetching the defaults when missing).
    pub fn load(config: &ExperimentConfig, device: &Device) -> Result<Self, PretrainError> {
        let (encoder, _) = load_image_encoder(&config.model.vision, &config.model.weights, device)?;
        let text_dir = text_encoder_dir(&config.model.weights)?;
        let text = load_cue_encoder(&text_dir, device)?;
        Ok(Self {
            encoder,
            text,
            text_dir,
        })
    }

    pub fn heads(&self) -> PretrainHeadsConfig {
        PretrainHeadsConfig {
            text_dim: self.text.hidden_size(),
            low_attributes: LOW_NAMES.len(),
            middle_attributes: MIDDLE_NAMES.len(),
        }
    }
}

/// The model as step 0 of a run with `config` sees it: drawn from the seed, so that a run, its
/// resumption and `evaluate degradations`' random baseline all start from the same weights.
pub fn initial_model(
    config: &ExperimentConfig,
    frozen: &Frozen,
    device: &Device,
) -> Result<PretrainModel, PretrainError> {
    device.seed(config.seed);
    let mfam_config = &config.model.mfam;
    let vision = &config.model.vision;
    let mfam = match config.pretrain.qformer_init {
        QFormerInit::Bert => {
            let (bert, _) = load_bert(&frozen.text_dir, device)?;
            mfam_config.init_from_bert(vision, &bert, device)?
        }
        QFormerInit::Random => mfam_config.init(vision, device),
    };
    let model = PretrainModel::init(mfam, mfam_config, &frozen.heads(), device);
    Ok(numbered_params(model))
}

/// How many photos a run holds back from training. A share is of the photos found, rounded
/// up; the default, a third, is what issue #20 asks of an evaluation that can tell a change
/// from noise (10 of the 29 sample photos, 160 held-out pairs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HoldOut {
    Count(usize),
    Share(f64),
}

impl Default for HoldOut {
    fn default() -> Self {
        Self::Share(1.0 / 3.0)
    }
}

impl HoldOut {
    /// Photos held out of `found`; a share holds out at least one.
    pub fn of(self, found: usize) -> usize {
        match self {
            Self::Count(n) => n,
            // The tolerance keeps a share that divides evenly (a third of 30) from rounding up
            // on a last-bit error.
            Self::Share(share) => {
                ((found as f64 * share - 1e-9).ceil() as usize).clamp(1, found.max(1))
            }
        }
    }
}

/// Which photos train and which are held back: a seeded draw of `hold_out` photos. A run
/// records its split in `split.json` when it starts; a resumed run and the fine-tuning runs
/// made from it read that record instead of drawing again from a folder that may have changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Split {
    pub train: Vec<PathBuf>,
    pub held_out: Vec<PathBuf>,
}

/// The split a run recorded, if it did (runs made before `split.json` existed did not).
pub fn read_split(run: &Path) -> Result<Option<Split>, PretrainError> {
    let path = run.join(SPLIT);
    if !path.exists() {
        return Ok(None);
    }
    let text = crate::files::read_string(&path, crate::files::MAX_ANNOTATION_BYTES)
        .map_err(io_error(&path))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| PretrainError::Io {
            path,
            source: std::io::Error::other(e),
        })
}

/// The run's split: on a fresh start drawn from `config.data` and recorded; on a resumption
/// the recorded one, with a warning when the data has changed since (new photos are left
/// out, missing ones are skipped where they are read).
pub fn run_split(
    config: &ExperimentConfig,
    run: &Path,
    resume: bool,
) -> Result<Split, PretrainError> {
    let p = &config.pretrain;
    if resume && let Some(recorded) = read_split(run)? {
        let recorded_paths: std::collections::BTreeSet<&PathBuf> =
            recorded.train.iter().chain(&recorded.held_out).collect();
        match config.data.image_paths() {
            Ok(now) => {
                let now: std::collections::BTreeSet<&PathBuf> = now.iter().collect();
                let added = now.difference(&recorded_paths).count();
                let gone = recorded_paths.difference(&now).count();
                if added + gone > 0 {
                    crate::errln!(
                        "warning: the data changed since this run started ({added} photos added, {gone} gone); it keeps the split in {}: added photos are not used, missing ones are skipped",
                        run.join(SPLIT).display()
                    );
                }
            }
            Err(e) => crate::errln!(
                "warning: cannot list the data now ({e}); the run keeps the split in {}",
                run.join(SPLIT).display()
            ),
        }
        return Ok(recorded);
    }
    if resume && run.join(HELD_OUT).is_dir() {
        crate::errln!(
            "warning: this run has no {SPLIT} (it was made before runs recorded their split): its split is drawn again from the data as it is now, and checked against {HELD_OUT}/"
        );
    }
    let split = split_photos(config.data.image_paths()?, p.hold_out, config.seed)?;
    let json = serde_json::to_string_pretty(&split).map_err(|e| PretrainError::Io {
        path: run.join(SPLIT),
        source: std::io::Error::other(e),
    })?;
    crate::io::atomic::write_atomic(&run.join(SPLIT), json.as_bytes()).map_err(|e| {
        PretrainError::Io {
            path: e.path,
            source: e.source,
        }
    })?;
    Ok(split)
}

pub fn split_photos(
    mut paths: Vec<PathBuf>,
    hold_out: HoldOut,
    seed: u64,
) -> Result<Split, PretrainError> {
    let hold_out = hold_out.of(paths.len());
    if paths.len() < hold_out + 2 {
        return Err(PretrainError::TooFewPhotos {
            found: paths.len(),
            hold_out,
        });
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(Stream::HoldOut.seed(seed, 0));
    let mut order: Vec<usize> = (0..paths.len()).collect();
    order.shuffle(&mut rng);
    let mut held: Vec<usize> = order[..hold_out].to_vec();
    held.sort_unstable();
    // Removing from the back keeps the remaining indices valid.
    let mut held_out: Vec<PathBuf> = held.iter().rev().map(|&i| paths.remove(i)).collect();
    held_out.reverse();
    Ok(Split {
        train: paths,
        held_out,
    })
}

/// The photos micro-batch `index` starts from: consecutive slices of a reshuffled order per
/// epoch, so every photo is drawn once an epoch and any micro-batch can be rebuilt from its
/// index alone. A photo that cannot be read is replaced by the next of the stream
/// (`build_micro_batch`), so with bad photos a batch may reach into the next one's slice.
pub fn micro_batch_photos(photos: usize, batch: usize, seed: u64, index: usize) -> Vec<usize> {
    let start = index * batch;
    (start..start + batch)
        .map(|position| photo_at(photos, seed, position))
        .collect()
}

/// The photo at `position` of the stream `micro_batch_photos` slices.
fn photo_at(photos: usize, seed: u64, position: usize) -> usize {
    let epoch = (position / photos) as u64;
    let mut order: Vec<usize> = (0..photos).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(
        Stream::PhotoOrder.seed(seed, epoch),
    ));
    order[position % photos]
}

/// One line of `metrics.jsonl` per optimiser step.
pub type StepMetrics = StepRecord<PretrainFields>;

/// Pretraining's own fields of a metrics line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainFields {
    pub images_per_second: f64,
}

impl StepFields for PretrainFields {
    fn throughput(&self) -> (&'static str, f64) {
        ("images_per_second", self.images_per_second)
    }
}

/// What `summary.json` holds after training; the binary adds the evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct PretrainSummary {
    pub steps: usize,
    /// The step the last resumption started from, if the run was resumed.
    pub resumed_from: Option<usize>,
    pub train_photos: usize,
    /// Held-back photos, copied into `held_out/`.
    pub held_out: Vec<String>,
    pub images_seen: usize,
    pub first_step: StepMetrics,
    pub last_step: StepMetrics,
    /// Seconds spent in the loop by this process.
    pub train_seconds: f64,
    /// Images that could not be read, with why.
    pub skipped: Vec<String>,
}

/// Trains the MFAM of `config` in the run directory `run` (which holds the resolved config),
/// from scratch or, with `resume`, from its latest checkpoint.
pub fn pretrain(
    config: &ExperimentConfig,
    frozen: &Frozen,
    run: &Path,
    device: &Device,
    resume: bool,
) -> Result<PretrainSummary, PretrainError> {
    let p = &config.pretrain;
    let mut trainer = Trainer::open(run, p.loop_settings(config), p.optimizer.init(), resume)?;
    let split = run_split(config, run, resume)?;
    let policy = config.data.loader.bad_images;
    let held_out = copy_held_out(&split.held_out, &RunLayout::new(run).held_out(), policy)?;
    trainer.note_skipped(held_out.skipped.clone());
    let train_device = device.clone().autodiff();
    let mut model = initial_model(config, frozen, &train_device)?;
    trainer.restore::<_, StepMetrics>(&mut model)?;
    let transform = config.data.transform(&config.model.vision);
    let job = PretrainJob {
        config: p,
        builder: BatchBuilder {
            encoder: &frozen.encoder,
            text: &frozen.text,
            transform: &transform,
            pairs: &p.pairs,
        },
        train: &split.train,
        batch_photos: config.data.loader.batch_size,
        seed: config.seed,
        policy,
        device,
    };
    let trained = trainer.run(&job, model)?;
    Ok(PretrainSummary {
        steps: p.steps,
        resumed_from: trained.resumed_from,
        train_photos: split.train.len(),
        held_out: held_out
            .copied
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        images_seen: trained.examples_seen,
        first_step: trained.first_step,
        last_step: trained.last_step,
        train_seconds: trained.train_seconds,
        skipped: trained.skipped,
    })
}

/// Pretraining as the trainer sees it: micro-batches of photos and their degraded copies,
/// the objective of `train::objective`, every MFAM parameter trained.
struct PretrainJob<'a> {
    config: &'a PretrainConfig,
    builder: BatchBuilder<'a>,
    train: &'a [PathBuf],
    batch_photos: usize,
    seed: u64,
    policy: BadImagePolicy,
    device: &'a Device,
}

#[derive(Default)]
struct PretrainTally {
    /// Each loss, unweighted, averaged over the step's micro-batches.
    named: BTreeMap<String, f64>,
    total: f64,
    images: usize,
}

impl Tally for PretrainTally {
    fn total(&self) -> f64 {
        self.total
    }

    fn examples(&self) -> usize {
        self.images
    }
}

impl Job for PretrainJob<'_> {
    type Model = PretrainModel;
    type Batch = BatchContents;
    type Scale = ();
    type Tally = PretrainTally;
    type Fields = PretrainFields;
    type Error = PretrainError;

    fn micro_batch(&self, index: usize) -> Built {
        build_micro_batch(
            &self.builder,
            self.train,
            self.batch_photos,
            self.seed,
            index,
            self.policy,
            self.device,
        )
    }

    fn lr(&self, step: usize) -> f64 {
        self.config.schedule.lr_at(step, self.config.steps)
    }

    fn scale(&self, _: &[BatchContents]) {}

    fn loss(
        &self,
        model: &PretrainModel,
        contents: BatchContents,
        _: &(),
        tally: &mut PretrainTally,
    ) -> Tensor<1> {
        let accumulation = self.config.gradient_accumulation as f64;
        tally.images += contents.examples.len();
        let batch = contents.batch.autodiff();
        let l = losses(model, &batch, &self.config.losses);
        for (name, value) in &l.named {
            *tally.named.entry((*name).to_string()).or_default() +=
                f64::from(value.clone().into_scalar::<f32>()) / accumulation;
        }
        let scaled = l.total / accumulation;
        tally.total += f64::from(scaled.clone().into_scalar::<f32>());
        scaled
    }

    fn line(
        &self,
        step: usize,
        lr: f64,
        grad_norm: f64,
        tally: PretrainTally,
        seconds: f64,
    ) -> StepMetrics {
        StepMetrics {
            step,
            lr,
            loss: tally.total,
            losses: tally.named,
            grad_norm,
            fields: PretrainFields {
                images_per_second: tally.images as f64 / seconds.max(1e-9),
            },
        }
    }
}

type Built = Result<(BatchContents, Vec<String>), PretrainError>;

fn build_micro_batch(
    builder: &BatchBuilder<'_>,
    train: &[PathBuf],
    batch_photos: usize,
    seed: u64,
    index: usize,
    policy: BadImagePolicy,
    device: &Device,
) -> Built {
    let mut images = Vec::new();
    let mut skipped = Vec::new();
    // A photo that cannot be read is replaced by the next one of the stream, so that a batch
    // keeps its size (a batch of one bad photo would otherwise be empty) and stays a function
    // of its index; after a whole epoch's worth of failures in a row the data is unusable.
    let start = index * batch_photos;
    let end = start + trainer::replacement_budget(batch_photos, train.len());
    let mut position = start;
    while images.len() < batch_photos && position < end {
        let path = &train[photo_at(train.len(), seed, position)];
        position += 1;
        match load_rgb(path) {
            Ok(image) => images.push(image),
            Err(e) => match policy {
                BadImagePolicy::Skip => skipped.push(format!("{}: {e}", path.display())),
                BadImagePolicy::Fail => {
                    return Err(PretrainError::BadPhoto {
                        path: path.clone(),
                        reason: e.to_string(),
                    });
                }
            },
        }
    }
    if images.is_empty() {
        return Err(PretrainError::EmptyBatch { index });
    }
    let photos: Vec<_> = images.iter().map(|image| (image, None)).collect();
    let contents = builder
        .build(
            &photos,
            Stream::Degradations.seed(seed, index as u64),
            device,
        )
        .map_err(|source| PretrainError::Batch { index, source })?;
    Ok((contents, skipped))
}

/// What `copy_held_out` did.
struct HeldOutCopy {
    /// The held-out photos copied, from where the data has them.
    copied: Vec<PathBuf>,
    /// Those that could not be read, with why.
    skipped: Vec<String>,
}

/// The name of held-out photo `index` in `held_out/`: numbered, as photos from different
/// folders may share a name.
fn held_out_name(index: usize, photo: &Path) -> String {
    let name = photo
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{index:03}_{name}")
}

/// The indices of the photos a `held_out/` folder holds, from its names.
fn held_out_indices(dir: &Path, photos: &[PathBuf]) -> Result<Vec<usize>, PretrainError> {
    let mut indices = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let name = entry.map_err(io_error(dir))?.file_name();
        let name = name.to_string_lossy();
        let index = name
            .split_once('_')
            .and_then(|(i, _)| i.parse::<usize>().ok())
            .filter(|&i| photos.get(i).is_some_and(|p| held_out_name(i, p) == name));
        match index {
            Some(i) => indices.push(i),
            None => {
                return Err(PretrainError::Io {
                    path: dir.join(name.as_ref()),
                    source: std::io::Error::other(
                        "not one of the photos this run holds out: the data changed since it started, and it has no split.json to keep its split; restore the data or start a new run",
                    ),
                });
            }
        }
    }
    indices.sort_unstable();
    Ok(indices)
}

/// Copies the held-back photos into the run, so that `evaluate degradations --images
/// RUN/held_out` sees exactly them. A photo that does not decode is skipped under `policy`
/// (or stops the run before training, under `fail`), so the evaluation after training never
/// meets it. The folder is filled under a temporary name and renamed: it exists only
/// complete, and a resumed run takes it, and the list of what it holds, as the first start
/// made it.
fn copy_held_out(
    photos: &[PathBuf],
    dir: &Path,
    policy: BadImagePolicy,
) -> Result<HeldOutCopy, PretrainError> {
    let skipped_note =
        |photo: &Path, reason: &str| format!("{}: {reason} (held out)", photo.display());
    if dir.is_dir() {
        let copied = held_out_indices(dir, photos)?;
        return Ok(HeldOutCopy {
            copied: copied.iter().map(|&i| photos[i].clone()).collect(),
            skipped: (0..photos.len())
                .filter(|i| !copied.contains(i))
                .map(|i| skipped_note(&photos[i], "could not be read when the run started"))
                .collect(),
        });
    }
    let tmp = crate::io::atomic::temporary_path(dir);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_error(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io_error(&tmp))?;
    let mut copy = HeldOutCopy {
        copied: Vec::new(),
        skipped: Vec::new(),
    };
    for (i, photo) in photos.iter().enumerate() {
        match crate::data::image::checked_bytes(photo) {
            Ok(bytes) => {
                let target = tmp.join(held_out_name(i, photo));
                std::fs::write(&target, bytes).map_err(io_error(&target))?;
                copy.copied.push(photo.clone());
            }
            Err(e) => match policy {
                BadImagePolicy::Skip => copy.skipped.push(skipped_note(photo, &e.to_string())),
                BadImagePolicy::Fail => {
                    return Err(PretrainError::BadPhoto {
                        path: photo.clone(),
                        reason: e.to_string(),
                    });
                }
            },
        }
    }
    std::fs::rename(&tmp, dir).map_err(io_error(dir))?;
    Ok(copy)
}

/// Where a pretraining run keeps what `evaluate` needs: its resolved config and its model.
#[derive(Debug, Clone, PartialEq)]
pub struct PretrainedRun {
    /// The run's directory.
    pub dir: PathBuf,
    pub config: ExperimentConfig,
    /// `model.safetensors` of a finished run, else the latest checkpoint's.
    pub model: PathBuf,
}

/// Finds a run from its directory, or from one of its checkpoint folders.
pub fn find_run(path: &Path) -> Result<PretrainedRun, PretrainError> {
    let (run, model) = checkpoints::locate(path, RunLayout::FINAL_MODEL)?;
    Ok(PretrainedRun {
        config: run_config(&run)?,
        dir: run,
        model,
    })
}

/// The resolved config a run directory was started with: what `--resume` continues, even
/// when the run was killed before its first checkpoint. Only a run `pretrain` made: resuming
/// a fine-tuning run or an evaluation as pretraining would write over it.
pub fn run_config(run: &Path) -> Result<ExperimentConfig, PretrainError> {
    let config_path = run.join(crate::run::RunLayout::RESOLVED_CONFIG);
    let not_a_run = |why: String| PretrainError::Io {
        path: run.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("not a pretraining run: {why}"),
        ),
    };
    match crate::run::recorded_command(run).as_deref() {
        Some("pretrain") => {}
        Some(other) => {
            return Err(not_a_run(format!(
                "its {} says `{other}` made it",
                crate::run::RunLayout::RUN_RECORD
            )));
        }
        None => {
            return Err(not_a_run(format!(
                "its {} is missing or unreadable",
                crate::run::RunLayout::RUN_RECORD
            )));
        }
    }
    if !config_path.is_file() {
        return Err(not_a_run("its resolved config is missing".into()));
    }
    Ok(crate::config::load(Some(&config_path), &[])?)
}

/// Pairwise accuracy of `model` and of the run's initial model on degraded copies of
/// `photos` (`pretrain.pairs.degradations` x `pretrain.evaluation.severities`).
/// `kinds` are the degradations of the copies: the run's training kinds
/// (`config.pretrain.pairs.degradations`) or others (`Degradation::SHIFTED`).
pub fn evaluate_degradations(
    config: &ExperimentConfig,
    frozen: &Frozen,
    model: &PretrainModel,
    photos: &[PathBuf],
    kinds: &[crate::data::degrade::Degradation],
    device: &Device,
) -> Result<crate::eval::degradations::DegradationReport, PretrainError> {
    use crate::eval::degradations::{DegradationReport, EvalPairs, quality_scores};
    let (loaded, skipped) = crate::data::load_photos(photos, config.data.loader.bad_images)?;
    let (kept, images): (Vec<&PathBuf>, Vec<_>) = loaded
        .into_iter()
        .map(|(i, image)| (&photos[i], image))
        .unzip();
    let transform = config.data.transform(&config.model.vision);
    let severities = config.pretrain.evaluation.severities.clone();
    let pairs = EvalPairs::new(&images, &transform, kinds, &severities, config.seed).map_err(
        |(i, e)| PretrainError::BadPhoto {
            path: kept[i].clone(),
            reason: e.to_string(),
        },
    )?;
    let batch = config.data.loader.batch_size.max(1) * 2;
    let originals: Vec<_> = pairs.originals.iter().collect();
    let copies: Vec<_> = pairs.copies.iter().map(|c| &c.2).collect();
    let score = |m: &PretrainModel| {
        let o = quality_scores(m, &frozen.encoder, &transform, &originals, batch, device);
        let c = quality_scores(m, &frozen.encoder, &transform, &copies, batch, device);
        pairs.score(&o, &c)
    };
    let trained = score(model);
    let random = score(&initial_model(config, frozen, device)?);
    let names = kept
        .iter()
        .map(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let mut report = DegradationReport::new(&trained, &random, names, severities)
        .ok_or(PretrainError::NoPhotos)?;
    report.skipped = skipped
        .iter()
        .map(|s| format!("{}: {}", s.what, s.reason))
        .collect();
    Ok(report)
}

/// The model of a run found by `find_run`, on `device` (without autodiff).
pub fn load_pretrained(
    run: &PretrainedRun,
    frozen: &Frozen,
    device: &Device,
) -> Result<PretrainModel, PretrainError> {
    let mut model = initial_model(&run.config, frozen, device)?;
    let report = crate::io::checkpoint::load_module(&mut model, &run.model)?;
    if !report.unexpected.is_empty() {
        return Err(PretrainError::Io {
            path: run.model.clone(),
            source: std::io::Error::other(format!(
                "holds weights the run's model lacks: {}",
                report.unexpected.join(", ")
            )),
        });
    }
    Ok(model)
}

/// What the `pretrain` command does after setting up its run directory: trains, writes
/// `summary.json`, evaluates the held-out photos with the model read back from the run, and
/// adds that report to the summary.
pub fn pretrain_and_evaluate(
    config: &ExperimentConfig,
    run_dir: &Path,
    device: &Device,
    resume: bool,
) -> Result<crate::eval::degradations::DegradationReport, PretrainError> {
    let frozen = Frozen::load(config, device)?;
    let summary = pretrain(config, &frozen, run_dir, device, resume)?;
    let summary_path = RunLayout::new(run_dir).summary();
    let to_json = |e: serde_json::Error| PretrainError::Io {
        path: summary_path.clone(),
        source: std::io::Error::other(e),
    };
    let mut json = serde_json::to_value(&summary).map_err(to_json)?;
    write_json(&summary_path, &json)?;
    let held_out = crate::data::formats::scan_folder(&run_dir.join(HELD_OUT), false)?;
    let model = load_pretrained(&find_run(run_dir)?, &frozen, device)?;
    let report = evaluate_degradations(
        config,
        &frozen,
        &model,
        &held_out,
        &config.pretrain.pairs.degradations,
        device,
    )?;
    json["degradations"] = serde_json::to_value(&report).map_err(to_json)?;
    write_json(&summary_path, &json)?;
    Ok(report)
}

fn write_json(path: &Path, json: &serde_json::Value) -> Result<(), PretrainError> {
    let text = serde_json::to_string_pretty(json).map_err(|e| PretrainError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    crate::io::atomic::write_atomic(path, text.as_bytes()).map_err(|e| PretrainError::Io {
        path: e.path,
        source: e.source,
    })
}

/// Whether two configs pretrain the same way: the same seed, encoder, MFAM, cue encoder,
/// data and `pretrain:` section (what fine-tuning, inference and `finetune:` settings do not
/// change).
pub fn same_pretraining(a: &ExperimentConfig, b: &ExperimentConfig) -> bool {
    a.seed == b.seed
        && a.model.vision == b.model.vision
        // Token pooling shapes only what the LLM reads, never what pretraining trains.
        && a.model.mfam.without_pooling() == b.model.mfam.without_pooling()
        && a.model.weights.vision == b.model.weights.vision
        && a.model.weights.text_encoder == b.model.weights.text_encoder
        && a.data == b.data
        && a.pretrain == b.pretrain
}

/// The newest finished run under `runs` (a folder of run directories) whose config
/// pretrains as `config` does.
pub fn find_matching_run(config: &ExperimentConfig, runs: &Path) -> Option<PretrainedRun> {
    let entries = std::fs::read_dir(runs).ok()?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.join(RunLayout::FINAL_MODEL).is_file() && p.join(RunLayout::SUMMARY).is_file()
        })
        .collect();
    // Run names start with their UTC time, so the newest sorts last.
    dirs.sort();
    dirs.iter()
        .rev()
        .filter_map(|d| find_run(d).ok())
        .find(|run| same_pretraining(&run.config, config))
}
