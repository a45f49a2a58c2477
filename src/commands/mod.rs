//! The commands the binaries run, as library functions, so that `sweep` runs a step in its own
//! process by calling them (no binary compiled into another), and the glue all binaries
//! share: one-line errors.

pub mod evaluate;
pub mod finetune;
pub mod pretrain;

use std::process::ExitCode;

/// Runs a binary's body; an error becomes one line on stderr (causes joined by `: `) and exit
/// status 1, never a panic trace. Output to stdout goes through `crate::console`, which drops
/// it quietly once the reader has gone.
pub fn main_with(command: &str, body: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            crate::errln!("{command}: error: {}", one_line(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by `: `, leaving out a cause whose text the message before
/// it already ends with (library errors print their source inline).
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !line.ends_with(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}
