//! `pretrain`: text-guided multi-scale self-supervised pretraining of the MFAM. With no
//! arguments, the main job: the sample photos, the real EfficientNet-Lite0 and MiniLM, a few
//! photos held back and evaluated at the end.

use crate::cli::TrainArgs;
use crate::distributed::World;
use crate::experiment::pretrain;
use crate::run::RunLayout;
use anyhow::Context;
use clap::Parser;

/// Pretrain the Multi-scale Feature Alignment Module on unlabeled photos, guided by text cues
/// derived from pixel attributes and controlled degradations.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Args {
    #[command(flatten)]
    train: TrainArgs,
}

pub fn run(args: Args, world: &World) -> anyhow::Result<()> {
    let device = args.train.common.device_on(world)?;
    let resume = args.train.resume.is_some();
    let leader = if world.is_leader() {
        Some(match &args.train.resume {
            Some(dir) => {
                let config = pretrain::run_config(dir)
                    .with_context(|| format!("resuming {}", dir.display()))?;
                check_ranks(world, &config)?;
                (config, dir.clone())
            }
            None => {
                let config = args.train.common.load_config()?;
                check_ranks(world, &config)?;
                let run = args.train.common.start_run("pretrain", &config)?;
                (config, run.path().to_path_buf())
            }
        })
    } else {
        None
    };
    let run_dir = crate::cli::agree_on_run(world, leader.as_ref().map(|(_, dir)| dir.as_path()))?;
    let config = match leader {
        Some((config, _)) => config,
        // The config rank 0 recorded, which it trains with.
        None => pretrain::run_config(&run_dir)
            .with_context(|| format!("reading the run in {}", run_dir.display()))?,
    };
    crate::cli::check_same_config(world, &config)?;
    if world.is_leader() {
        crate::outln!("run directory: {}", run_dir.display())?;
    }
    let report = pretrain::pretrain_and_evaluate(&config, &run_dir, &device, resume, world)
        .context("pretraining")?;
    let Some(report) = report else {
        return Ok(());
    };
    crate::outln!(
        "held-out pairwise accuracy {:.3} (random init {:.3}) over {} pairs; summary in {}",
        report.pairwise_accuracy,
        report.random_init_pairwise_accuracy,
        report.pairs,
        run_dir.join(RunLayout::SUMMARY).display()
    )?;
    Ok(())
}

/// Before a run directory is made: the ranks must split a step evenly, and find the default
/// weights in place.
fn check_ranks(world: &World, config: &crate::experiment::ExperimentConfig) -> anyhow::Result<()> {
    world.check_divides(
        "pretrain.gradient_accumulation",
        config.pretrain.gradient_accumulation,
    )?;
    if world.size() > 1 {
        crate::experiment::fetch_default_weights(config, false)?;
    }
    Ok(())
}
