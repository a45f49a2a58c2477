//! `finetune`: instruction-tune the MFAM and the LLM on the four aesthetic tasks, in the
//! stages the config names. With no arguments, the built-in job: the default pretraining run
//! (made first when absent), SmolLM2-135M-Instruct, and instructions made from the sample
//! photos' self-supervised signals; the photos pretraining held out are scored, commented on
//! and given suggestions at the end, before and after fine-tuning.

use std::path::Path;

use crate::cli::{CommonArgs, TrainArgs};
use crate::distributed::World;
use crate::experiment::ExperimentConfig;
use crate::experiment::finetune;
use crate::experiment::pretrain::{self, PretrainedRun};
use crate::run::RunLayout;
use crate::run::{RunDir, RunRecord};
use crate::runners::held_out::{self, write_held_out_set};
use crate::runners::tasks::Runner;
use anyhow::Context;
use clap::Parser;

/// Instruction-tune the MFAM and the LLM for aesthetic scoring, commenting, suggesting and
/// personalized assessment.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Args {
    #[command(flatten)]
    train: TrainArgs,
    /// Skip the held-out evaluation at the end.
    #[arg(long)]
    no_eval: bool,
}

/// Held-out copies of this severity are commented on and given suggestions.
const DESCRIBE_SEVERITY: f32 = 1.0;

pub fn run(args: Args, world: &World) -> anyhow::Result<()> {
    let device = args.train.common.device_on(world)?;
    let (made, run_dir) = crate::cli::agree_on_run(world, || -> anyhow::Result<_> {
        let (config, pretrained) = match &args.train.resume {
            Some(dir) => {
                finetune::run_record(dir).with_context(|| format!("resuming {}", dir.display()))?
            }
            None => {
                let config = args.train.common.load_config()?;
                let pretrained = pretrained_run(&config, &args.train.common, world)?;
                (config, pretrained)
            }
        };
        let settings = config
            .finetune
            .loop_settings(&config.data, &config.distributed);
        super::prepare_ranks(world, &config, &settings, true)?;
        let dir = match &args.train.resume {
            Some(dir) => dir.clone(),
            None => {
                if let Some(out) = &args.train.common.output_dir {
                    crate::run::check_apart(out, &pretrained.dir)?;
                }
                let run = args
                    .train
                    .common
                    .start_run_with("finetune", &config, |dir| {
                        finetune::write_pretrained(dir, &pretrained).map_err(|e| {
                            crate::run::RunError::Io {
                                path: dir.join(crate::run::RunLayout::PRETRAINED),
                                source: std::io::Error::other(e.to_string()),
                            }
                        })
                    })?;
                run.path().to_path_buf()
            }
        };
        Ok(((config, pretrained), dir))
    })?;
    let (config, pretrained) = match made {
        Some(made) => made,
        // What rank 0 recorded, which it trains with.
        None => finetune::run_record(&run_dir)
            .with_context(|| format!("reading the run in {}", run_dir.display()))?,
    };
    crate::cli::check_same_config(world, &config)?;
    if world.is_leader() {
        crate::outln!(
            "run directory: {} (from pretraining run {})",
            run_dir.display(),
            pretrained.dir.display()
        )?;
    }
    let summary = finetune::finetune(
        &config,
        &pretrained,
        &run_dir,
        &device,
        args.train.resume.is_some(),
        world,
    )
    .context("fine-tuning")?;
    let Some(summary) = summary else {
        return Ok(());
    };
    let mut json = serde_json::to_value(&summary)?;
    write_summary(&run_dir, &json)?;
    if args.no_eval {
        return Ok(());
    }
    let photos =
        crate::data::formats::scan_folder(&pretrained.dir.join(RunLayout::HELD_OUT), false)?;
    let transform = config.data.transform(&config.model.vision).centred();
    let set = write_held_out_set(
        &photos,
        &transform,
        &config.pretrain.pairs.degradations,
        &config.pretrain.evaluation.severities,
        config.seed,
        &run_dir.join(RunLayout::HELD_OUT),
        config.data.loader.bad_images,
    )?;
    for skipped in &set.skipped {
        crate::errln!("finetune: held-out photo skipped: {skipped}");
    }
    // Both models as `infer` reads them: from the files.
    let found = finetune::find_run(&run_dir)?;
    let after =
        finetune::load_finetuned(&found, &device).context("loading the fine-tuned model")?;
    let before = finetune::initial_model(&config, &pretrained, &device, &device)
        .context("loading the model before fine-tuning")?;
    let runner = |loaded| Runner {
        loaded,
        transform: &transform,
        config: &config.infer,
    };
    let report = held_out::evaluate(&runner(&after), &runner(&before), &set, DESCRIBE_SEVERITY)
        .context("evaluating the held-out photos")?;
    json["held_out"] = serde_json::to_value(&report)?;
    write_summary(&run_dir, &json)?;
    crate::outln!(
        "held-out pairwise accuracy of `infer score` {:.3} (before fine-tuning {:.3}) over {} pairs; comments name the defect in {:.0}%, suggestions in {:.0}%; on the originals, comments state no defect in {:.0}%, suggestions in {:.0}%; summary in {}",
        report.pairwise_accuracy,
        report.before_pairwise_accuracy,
        report.pairs,
        100.0 * report.comments_naming_defect,
        100.0 * report.suggestions_naming_defect,
        100.0 * report.originals_comments_without_defect,
        100.0 * report.originals_suggestions_without_defect,
        run_dir.join(RunLayout::SUMMARY).display()
    )?;
    Ok(())
}

/// The pretraining run `finetune.pretrained` names, else the newest matching one under
/// `runs/pretrain`, else a new one made now.
fn pretrained_run(
    config: &ExperimentConfig,
    common: &CommonArgs,
    world: &World,
) -> anyhow::Result<PretrainedRun> {
    if let Some(path) = &config.finetune.pretrained {
        return pretrain::find_run(path)
            .with_context(|| format!("finetune.pretrained = {}", path.display()));
    }
    let runs = crate::run::default_runs("pretrain");
    if let Some(found) = pretrain::find_matching_run(config, &runs) {
        return Ok(found);
    }
    if world.size() > 1 {
        anyhow::bail!(
            "no finished pretraining run under {} matches this config, and {} ranks do not pretrain one on the way: run `pretrain` first (under the same launcher) or set finetune.pretrained",
            runs.display(),
            world.size()
        );
    }
    let run = RunDir::create_unique(&runs)?;
    run.record(
        config,
        &RunRecord::current("pretrain", config.seed, &common.device.to_string()),
    )?;
    crate::outln!(
        "no finished pretraining run with this config under {}; pretraining first in {}",
        runs.display(),
        run.path().display()
    )?;
    let device = common.device()?;
    let report = pretrain::pretrain_and_evaluate(config, run.path(), &device, false, world)
        .context("pretraining")?
        .context("pretraining returned no report on rank 0")?;
    crate::outln!(
        "pretraining: held-out pairwise accuracy {:.3} (random init {:.3})",
        report.pairwise_accuracy,
        report.random_init_pairwise_accuracy
    )?;
    Ok(pretrain::find_run(run.path())?)
}

fn write_summary(run_dir: &Path, json: &serde_json::Value) -> anyhow::Result<()> {
    let path = run_dir.join(RunLayout::SUMMARY);
    crate::io::atomic::write_atomic(&path, serde_json::to_string_pretty(json)?.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
