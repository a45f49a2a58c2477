//! `finetune`: instruction-tune the MFAM and the LLM on the four aesthetic tasks.
//! The command itself is `calm::commands::finetune`, which `sweep` also runs.

use std::process::ExitCode;

use calm::commands::{finetune, main_with_world};
use clap::Parser;

fn main() -> ExitCode {
    main_with_world("finetune", |world| {
        finetune::run(finetune::Args::parse(), world)
    })
}
