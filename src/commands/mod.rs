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
    let one_process = || {
        match crate::distributed::launched_size() {
            Some(size) if size > 1 => Err(crate::distributed::DistributedError::OneProcessOnly {
                command: command.to_string(),
                size,
            })?,
            _ => {}
        }
        body()
    };
    match one_process() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            crate::errln!("{command}: error: {}", one_line(&err));
            ExitCode::FAILURE
        }
    }
}

/// `main_with` for a command that data parallelism splits (`pretrain`, `finetune`): the body
/// runs as one rank of the job an MPI launcher started (or as the one process). An error on
/// any rank is printed with the rank's number and ends every process of the job, so no rank
/// waits for ever on one that stopped.
pub fn main_with_world(
    command: &str,
    body: impl FnOnce(&crate::distributed::World) -> anyhow::Result<()>,
) -> ExitCode {
    let world = match crate::distributed::World::init() {
        Ok(world) => world,
        Err(err) => {
            crate::errln!("{command}: error: {err}");
            return ExitCode::FAILURE;
        }
    };
    match body(&world) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if world.size() > 1 => {
            crate::errln!(
                "{command}: rank {} of {}: error: {}",
                world.rank(),
                world.size(),
                one_line(&err)
            );
            world.abort(1)
        }
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
