//! `pretrain`: text-guided multi-scale self-supervised pretraining of the MFAM. With no
//! arguments, the main job: the sample photos, the real EfficientNet-Lite0 and MiniLM, a few
//! photos held back and evaluated at the end.

use std::path::PathBuf;

use crate::cli::CommonArgs;
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
    common: CommonArgs,
    /// Continue the run in this directory from its latest checkpoint (from step 0 when it was
    /// stopped before its first), with its own config.
    #[arg(long, value_name = "RUN", conflicts_with_all = ["config", "set", "output_dir", "overwrite"])]
    resume: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let device = args.common.device()?;
    let (config, run_dir) = match &args.resume {
        Some(dir) => {
            let config =
                pretrain::run_config(dir).with_context(|| format!("resuming {}", dir.display()))?;
            (config, dir.clone())
        }
        None => {
            let config = args.common.load_config()?;
            let run = args.common.start_run("pretrain", &config)?;
            (config, run.path().to_path_buf())
        }
    };
    crate::outln!("run directory: {}", run_dir.display())?;
    let report = pretrain::pretrain_and_evaluate(&config, &run_dir, &device, args.resume.is_some())
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
