//! `sweep`: run a YAML experiment sweep and tabulate its results.

mod common;

use std::path::PathBuf;
use std::process::ExitCode;

use calm::cli::CommonArgs;
use clap::Parser;

/// Run a grid of experiments described in a YAML sweep spec and collect their results.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The sweep spec (see experiments/).
    #[arg(long, value_name = "FILE")]
    spec: Option<PathBuf>,
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> ExitCode {
    common::main_with("sweep", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    args.common.load_config()?;
    Err(common::not_built("experiment sweeps", 9))
}
