//! Stage 1 as a command runs it (`train::pretrain` holds the job itself): a run directory's
//! split and held-out photos, the seeded initial model, training, the degradation evaluation
//! of the result, and finding, reading back and matching the runs it leaves.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use super::ExperimentConfig;
use crate::distributed::World;
use crate::io::hf::load_bert;
use crate::model::pretrain::PretrainModel;
use crate::run::RunLayout;
use crate::train::batch::BatchBuilder;
use crate::train::checkpoints;
use crate::train::optim::numbered_params;
use crate::train::pretrain::{
    Frozen, HeldOutCopy, PretrainError, PretrainJob, PretrainSummary, PretrainTotals, QFormerInit,
    Split, StepMetrics, copy_held_out, read_split, split_photos,
};
use crate::train::trainer::Trainer;

// Short names for the messages below.
const HELD_OUT: &str = RunLayout::HELD_OUT;
const SPLIT: &str = RunLayout::SPLIT;

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

/// Trains the MFAM of `config` in the run directory `run` (which holds the resolved config),
/// from scratch or, with `resume`, from its latest checkpoint, as one rank of `world`. The
/// leader draws the split and copies the held-out photos; the other ranks read the split it
/// wrote and return `None` when training ends.
pub fn pretrain(
    config: &ExperimentConfig,
    frozen: &Frozen,
    run: &Path,
    device: &Device,
    resume: bool,
    world: &World,
) -> Result<Option<PretrainSummary>, PretrainError> {
    let p = &config.pretrain;
    config
        .train
        .validate_on(device)
        .map_err(PretrainError::Invalid)?;
    let mut trainer = Trainer::open(
        run,
        p.loop_settings(&config.data, &config.distributed),
        p.optimizer.init(),
        resume,
        world,
    )?;
    let policy = config.data.loader.bad_images;
    let (split, held_out) = if world.is_leader() {
        let split = run_split(config, run, resume)?;
        let held_out = copy_held_out(&split.held_out, &RunLayout::new(run).held_out(), policy)?;
        world.barrier();
        (split, held_out)
    } else {
        world.barrier();
        let split = read_split(run)?.ok_or_else(|| PretrainError::Io {
            path: run.join(SPLIT),
            source: std::io::Error::other("rank 0 did not write the run's split"),
        })?;
        let held_out = HeldOutCopy {
            copied: Vec::new(),
            skipped: Vec::new(),
        };
        (split, held_out)
    };
    trainer.note_skipped(held_out.skipped.clone());
    let train_device = device.clone().autodiff();
    let mut model = initial_model(config, frozen, &train_device)?
        .with_activation_checkpointing(config.train.activation_checkpointing)
        .with_precision(config.train.precision);
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
    let Some(trained) = trainer.run(&job, model)? else {
        return Ok(None);
    };
    let images_seen = trained.examples_seen;
    Ok(Some(trained.summary(
        split.train.len(),
        &held_out.copied,
        PretrainTotals { images_seen },
    )))
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
    use crate::eval::degradations::{DegradationReport, EvalPairs};
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
/// adds that report to the summary. Ranks other than the leader only train (`None`).
pub fn pretrain_and_evaluate(
    config: &ExperimentConfig,
    run_dir: &Path,
    device: &Device,
    resume: bool,
    world: &World,
) -> Result<Option<crate::eval::degradations::DegradationReport>, PretrainError> {
    let frozen = Frozen::load(&config.model, device)?;
    let Some(summary) = pretrain(config, &frozen, run_dir, device, resume, world)? else {
        return Ok(None);
    };
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
    Ok(Some(report))
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

/// The quality head's score of each image (centre-cropped to the encoder's size already),
/// computed `batch` images at a time.
pub fn quality_scores(
    model: &crate::model::pretrain::PretrainModel,
    encoder: &crate::model::vision::frozen::FrozenEncoder,
    transform: &crate::data::Transform,
    images: &[&image::RgbImage],
    batch: usize,
    device: &burn::tensor::Device,
) -> Vec<f32> {
    let size = transform.size;
    let mut scores = Vec::with_capacity(images.len());
    for chunk in images.chunks(batch.max(1)) {
        let pixels: Vec<f32> = chunk.iter().flat_map(|i| transform.normalize(i)).collect();
        let pixels = burn::tensor::Tensor::<4>::from_data(
            burn::tensor::TensorData::new(pixels, [chunk.len(), 3, size, size]),
            device,
        );
        let quality = model.forward(&encoder.forward(pixels)).quality;
        scores.extend(quality.into_data().iter::<f32>());
    }
    scores
}
