//! `pretrain`: text-guided multi-scale self-supervised pretraining of the MFAM.
//! The command itself is `calm::commands::pretrain`, which `sweep` also runs.

use std::process::ExitCode;

use calm::commands::{main_with_world, pretrain};
use clap::Parser;

fn main() -> ExitCode {
    main_with_world("pretrain", |world| {
        pretrain::run(pretrain::Args::parse(), world)
    })
}
