//! `infer`: Score, comment on, assess in context or suggest improvements for photos.

mod common;

use std::process::ExitCode;

use calm::cli::CommonArgs;
use clap::Parser;

/// Score, comment on, assess in context or suggest improvements for photos.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> ExitCode {
    common::main_with("infer", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    args.common.load_config()?;
    args.common.device()?;
    Err(common::not_built("inference", 7))
}
