//! The commands the binaries run, as library functions, so that `sweep` runs a step in its own
//! process by calling them (no binary compiled into another), and the glue all binaries
//! share: one-line errors.

pub mod evaluate;
pub mod finetune;
pub mod pretrain;

use std::process::ExitCode;

use crate::distributed::World;
use crate::experiment::ExperimentConfig;
use crate::train::trainer::LoopSettings;

/// Runs a binary's body; an error becomes one line on stderr (causes joined by `: `) and exit
/// status 1, never a panic trace. Output to stdout goes through `crate::console`, which drops
/// it quietly once the reader has gone.
pub fn main_with(command: &str, body: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    let one_process = || {
        crate::distributed::one_process(command)?;
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

/// What rank 0 does before it makes or resumes a run of `settings`: checks that the ranks split
/// a step evenly (the trainer checks too, but only once the run directory exists), and with
/// several ranks fetches the default weights the config leaves unset (with `llm`, the LLM's),
/// which the ranks would otherwise all fetch into one folder at once.
fn prepare_ranks(
    world: &World,
    config: &ExperimentConfig,
    settings: &LoopSettings,
    llm: bool,
) -> anyhow::Result<()> {
    world.check_divides(settings.accumulation_key, settings.gradient_accumulation)?;
    if world.size() > 1 {
        let weights = &config.model.weights;
        if let crate::model::VisionConfig::EfficientnetLite0(_) = config.model.vision {
            crate::io::encoders::efficientnet_lite0_weights(weights)?;
        }
        crate::io::encoders::text_encoder_dir(weights)?;
        if llm {
            crate::experiment::finetune::llm_path(config)?;
        }
    }
    Ok(())
}
