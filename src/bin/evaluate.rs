//! `evaluate`: metrics on files, the paper's protocols, and degradation rankings.
//! The command itself is `calm::commands::evaluate`, which `sweep` also runs.

use std::process::ExitCode;

use calm::commands::{evaluate, main_with};
use clap::Parser;

fn main() -> ExitCode {
    main_with("evaluate", || evaluate::run(evaluate::Args::parse()))
}
