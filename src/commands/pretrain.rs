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
    let (made, run_dir) = crate::cli::agree_on_run(world, || -> anyhow::Result<_> {
        let config = match &args.train.resume {
            Some(dir) => {
                pretrain::run_config(dir).with_context(|| format!("resuming {}", dir.display()))?
            }
            None => args.train.common.load_config()?,
        };
        let settings = config
            .pretrain
            .loop_settings(&config.data, &config.distributed);
        super::prepare_ranks(world, &config, &settings, false)?;
        let dir = match &args.train.resume {
            Some(dir) => dir.clone(),
            None => {
                let run = args.train.common.start_run("pretrain", &config)?;
                run.path().to_path_buf()
            }
        };
        Ok((config, dir))
    })?;
    let config = match made {
        Some(config) => config,
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
