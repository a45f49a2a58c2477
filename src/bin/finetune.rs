//! `finetune`: Instruction-tune the MFAM and the LLM on comment and score data, in two stages.

mod common;

use std::process::ExitCode;

use calm::cli::CommonArgs;
use clap::Parser;

/// Instruction-tune the MFAM and the LLM on comment and score data, in two stages.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> ExitCode {
    common::main_with("finetune", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    args.common.load_config()?;
    args.common.device()?;
    Err(common::not_built("instruction tuning", 7))
}
