//! `inspect`: look at what a config, a dataset or a checkpoint amounts to, without training.

mod common;

use std::process::ExitCode;

use anyhow::Context;
use calm::cli::CommonArgs;
use clap::{Parser, Subcommand};

/// Inspect configs, datasets and model forward passes.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    /// Print the resolved config (defaults, `extends:` files, `--set` overrides) as YAML.
    Config {
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Run the configured dataset once through decoding, transforms and batching; report
    /// counts and every skipped file.
    Data {
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Run one model component on inputs from a safetensors file and write its outputs.
    Forward {
        #[command(flatten)]
        common: CommonArgs,
    },
}

fn main() -> ExitCode {
    common::main_with("inspect", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Config { common } => {
            print!("{}", calm::config::to_yaml(&common.load_config()?)?);
            Ok(())
        }
        What::Data { common } => {
            let config = common.load_config()?;
            let device = common.device()?;
            let report = calm::data::check_pipeline(
                &config.data,
                &config.model.vision,
                config.seed,
                &device,
            )
            .context("reading the dataset")?;
            for skip in &report.skipped {
                println!("skipped {}: {}", skip.what, skip.reason);
            }
            println!(
                "{} images, {} loaded in {} batches of shape {:?}, {} skipped",
                report.images,
                report.loaded,
                report.batches,
                report.first_batch_shape.unwrap_or_default(),
                report.skipped.len()
            );
            Ok(())
        }
        What::Forward { .. } => Err(common::not_built("`inspect forward`", 3)),
    }
}
