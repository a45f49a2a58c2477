//! `pretrain`: text-guided multi-scale self-supervised pretraining of the MFAM. With no
//! arguments, the main job: the sample photos, the real EfficientNet-Lite0 and MiniLM, a few
//! photos held back and evaluated at the end.

use crate::cli::TrainArgs;
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

pub fn run(args: Args) -> anyhow::Result<()> {
    let device = args.train.common.device()?;
    let (config, run_dir) = match &args.train.resume {
        Some(dir) => {
            let config =
                pretrain::run_config(dir).with_context(|| format!("resuming {}", dir.display()))?;
            (config, dir.clone())
        }
        None => {
            let config = args.train.common.load_config()?;
            let run = args.train.common.start_run("pretrain", &config)?;
            (config, run.path().to_path_buf())
        }
    };
    crate::outln!("run directory: {}", run_dir.display())?;
    let report =
        pretrain::pretrain_and_evaluate(&config, &run_dir, &device, args.train.resume.is_some())
            .context("pretraining")?;
    crate::outln!(
        "held-out pairwise accuracy {:.3} (random init {:.3}) over {} pairs; summary in {}",
        report.pairwise_accuracy,
        report.random_init_pairwise_accuracy,
        report.pairs,
        run_dir.join(RunLayout::SUMMARY).display()
    )?;
    Ok(())
}
