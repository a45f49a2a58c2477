//! Stage 2 as a command runs it (`train::finetune` holds the job itself): the model a run
//! starts from (the pretraining run's MFAM and the LLM), its task mixes, training, the record
//! of the pretraining run it came from, and finding and loading the runs it leaves.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::ExperimentConfig;
use super::pretrain::{self, PretrainedRun};
use crate::data::raters::SimulatedRaters;
use crate::data::selfsup_instruct::SelfSupervisedTasks;
use crate::data::tasks::{Mix, TaskBuilder, TaskSourceConfig, build_task};
use crate::distributed::World;
use crate::io::llama::{GgufWeights, load_chat_model_with};
use crate::io::models::{FetchedModel, ensure_fetched};
use crate::model::calm::Calm;
use crate::model::mfam::Group;
use crate::model::score_head::ScoreHead;
use crate::run::RunLayout;
use crate::streams::Stream;
use crate::train::checkpoints;
use crate::train::finetune::{
    FinetuneError, FinetuneJob, FinetuneSource, FinetuneSummary, Loaded, StepMetrics,
    build_micro_batch, with_system_prompt,
};
use crate::train::instruct_batch::Preparer;
use crate::train::optim::numbered_params_keeping;
use crate::train::pretrain::{Frozen, PretrainError, read_split, split_photos};
use crate::train::projector_init::{ProjectorInitKind, fit_level_projections};
use crate::train::trainer::Trainer;

// A short name for the messages below.
const PRETRAINED: &str = RunLayout::PRETRAINED;

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
    initial_model_with(
        config,
        pretrained,
        device,
        model_device,
        GgufWeights::Dequantized,
    )
}

/// `initial_model` with a GGUF LLM's matrices held as `weights` says.
fn initial_model_with(
    config: &ExperimentConfig,
    pretrained: &PretrainedRun,
    device: &Device,
    model_device: &Device,
    weights: GgufWeights,
) -> Result<Loaded, FinetuneError> {
    check_same_model(config, pretrained)?;
    let frozen = Frozen::load(&pretrained.config.model, device)?;
    let mut mfam = pretrain::load_pretrained(pretrained, &frozen, model_device)?.mfam;
    mfam.set_pooling(&config.model.mfam);
    let device = model_device;
    let (llm, tokenizer) = load_chat_model_with(&llm_path(config)?, device, weights)?;
    if llm.hidden_size() != config.model.mfam.llm_hidden_size {
        return Err(FinetuneError::Invalid(format!(
            "the LLM's hidden size is {}, but model.mfam.llm_hidden_size is {}",
            llm.hidden_size(),
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
    let lazy = llm.quantized_param_ids();
    Ok(Loaded {
        encoder: frozen.encoder,
        tokenizer,
        model: numbered_params_keeping(
            Calm {
                mfam,
                llm,
                score_head,
            },
            &lazy,
        ),
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

/// Fine-tunes in the run directory `run` (holding the resolved config and the record of
/// `pretrained` that `write_pretrained` writes) from `pretrained`,
/// from scratch or, with `resume`, from the run's latest checkpoint, as one rank of `world`
/// (only the leader returns a summary).
pub fn finetune(
    config: &ExperimentConfig,
    pretrained: &PretrainedRun,
    run: &Path,
    device: &Device,
    resume: bool,
    world: &World,
) -> Result<Option<FinetuneSummary>, FinetuneError> {
    let f = &config.finetune;
    config
        .train
        .validate_on(device)
        .map_err(|e| FinetuneError::Invalid(format!("invalid configuration: {e}")))?;
    let mut trainer = Trainer::open(
        run,
        f.loop_settings(&config.data, &config.distributed),
        f.optimizer.init(),
        resume,
        world,
    )?;
    // The pretraining run's split: its held-out photos stay unseen here too.
    let split = pretraining_split(pretrained)?;
    let mixes = build_mixes(config, &split.train)?;
    let train_device = device.clone().autodiff();
    let Loaded {
        encoder,
        tokenizer,
        model,
        visual_tokens,
    } = initial_model(config, pretrained, device, &train_device)?;
    let mut model = model
        .with_activation_checkpointing(config.train.activation_checkpointing)
        .with_precision(config.train.precision);
    let resumed_from = trainer.restore::<_, StepMetrics>(&mut model)?;
    let transform = config.data.transform(&config.model.vision);
    let preparer = Preparer {
        encoder: &encoder,
        tokenizer: &tokenizer,
        transform: &transform,
        visual_tokens,
        max_length: f.max_length,
    };
    // Moved, not cloned: a copy of the initial weights kept beside the trained ones would
    // cost one more set of trained weights for the whole run.
    let model = match (resumed_from, f.projector_init.kind, mixes.first()) {
        (None, ProjectorInitKind::LeastSquares, Some(first)) => {
            init_projections(config, &preparer, model, first, device)?
        }
        _ => model,
    };
    let job = FinetuneJob {
        config: f,
        preparer: &preparer,
        mixes: &mixes,
        seed: config.seed,
        policy: config.data.loader.bad_images,
        device,
        train_device,
    };
    let Some(trained) = trainer.run(&job, model)? else {
        return Ok(None);
    };
    Ok(Some(trained.summary(
        split.train.len(),
        &split.held_out,
        FinetuneSource {
            pretrained: pretrained.model.display().to_string(),
        },
    )))
}

/// The photos the pretraining run trained on and held out: the split it recorded, else (a run
/// made before runs recorded it) drawn again as it drew it.
fn pretraining_split(
    pretrained: &PretrainedRun,
) -> Result<crate::train::pretrain::Split, FinetuneError> {
    if let Some(split) = read_split(&pretrained.dir)? {
        return Ok(split);
    }
    let pc = &pretrained.config;
    Ok(split_photos(
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
                Stream::ProjectorFit.seed(config.seed, 0),
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

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PretrainedRecord {
    /// The pretraining run's directory.
    run: PathBuf,
    /// The weights taken from it (`finetune.pretrained` may name one of its checkpoints);
    /// absent in records written before it was kept: the run's final model, else its latest
    /// checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model: Option<PathBuf>,
}

/// Records in `run` the pretraining run it starts from (`pretrained.json`).
pub fn write_pretrained(run: &Path, pretrained: &PretrainedRun) -> Result<(), FinetuneError> {
    let record = PretrainedRecord {
        run: pretrained.dir.clone(),
        model: Some(pretrained.model.clone()),
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
    let (dir, model) = checkpoints::locate(path, RunLayout::FINAL_MODEL)?;
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
                crate::run::RunLayout::RUN_RECORD
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
    let config_path = dir.join(crate::run::RunLayout::RESOLVED_CONFIG);
    let mut config = crate::config::load(Some(&config_path), &[]).map_err(PretrainError::from)?;
    keep_unpooled_levels(&mut config, &config_path)?;
    let mut pretrained = pretrain::find_run(&resolve_relative(&record.run, dir))?;
    if let Some(model) = record.model {
        pretrained.model = resolve_relative(&model, dir);
    }
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
    for (group, level) in [
        (Group::Low, &mut mfam.low),
        (Group::Middle, &mut mfam.middle),
        (Group::High, &mut mfam.high),
    ] {
        if saved["model"]["mfam"][group.name()].get("pool").is_none() {
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
    load_finetuned_with(run, device, GgufWeights::Dequantized)
}

/// `load_finetuned` with a GGUF LLM's matrices held as `weights` says. A run that trained the
/// LLM's own weights replaces the file's, so its LLM is always loaded in f32.
pub fn load_finetuned_with(
    run: &FinetunedRun,
    device: &Device,
    weights: GgufWeights,
) -> Result<Loaded, FinetuneError> {
    let weights = if run.config.finetune.trains_llm_base() {
        GgufWeights::Dequantized
    } else {
        weights
    };
    let mut loaded = initial_model_with(&run.config, &run.pretrained, device, device, weights)?;
    let kept = run.config.finetune.kept();
    let report = crate::io::checkpoint::load_module_except(&mut loaded.model, &run.model, |p| {
        !kept.holds(p)
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
