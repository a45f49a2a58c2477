//! `pretrain`: text-guided multi-scale self-supervised pretraining of the MFAM.

mod common;

use std::process::ExitCode;

use anyhow::Context;
use calm::cli::CommonArgs;
use clap::Parser;

/// Pretrain the Multi-scale Feature Alignment Module on unlabeled photos, guided by text cues
/// derived from pixel attributes and controlled degradations.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> ExitCode {
    common::main_with("pretrain", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = args.common.load_config()?;
    let device = args.common.device()?;
    let run = args.common.start_run("pretrain", &config)?;
    println!("run directory: {}", run.path().display());
    let report =
        calm::data::check_pipeline(&config.data, &config.model.vision, config.seed, &device)
            .context("checking the data pipeline")?;
    run.write("data_report.json", &serde_json::to_string_pretty(&report)?)?;
    println!(
        "data: {} images, {} loaded in {} batches, {} skipped",
        report.images,
        report.loaded,
        report.batches,
        report.skipped.len()
    );
    Err(common::not_built("the pretraining loop", 5))
}
