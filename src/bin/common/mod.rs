//! Glue shared by the binaries: one-line errors and the message for capabilities not built yet.

use std::process::ExitCode;

/// Runs a binary's body; an error becomes one line on stderr (causes joined by `: `) and exit
/// status 1, never a panic trace.
pub fn main_with(command: &str, body: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{command}: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The error of a capability whose issue has not landed yet.
#[allow(dead_code)]
pub fn not_built(what: &str, issue: u32) -> anyhow::Error {
    anyhow::anyhow!("{what} is not built yet (tracked in issue #{issue})")
}
