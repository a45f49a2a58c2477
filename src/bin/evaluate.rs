//! `evaluate`: Evaluate a model on the four aesthetic tasks with metrics equal to scipy and coco-caption.

mod common;

use std::process::ExitCode;

use calm::cli::CommonArgs;
use clap::Parser;

/// Evaluate a model on the four aesthetic tasks with metrics equal to scipy and coco-caption.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> ExitCode {
    common::main_with("evaluate", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    args.common.load_config()?;
    args.common.device()?;
    Err(common::not_built("evaluation", 8))
}
