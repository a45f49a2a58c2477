//! What every command-line tool shares: the common flags, loading the config, choosing the
//! device and starting a run directory.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::config::{ConfigError, load};
use crate::device::DeviceSpec;
use crate::distributed::{DistributedError, World};
use crate::experiment::ExperimentConfig;
use crate::run::{RunDir, RunError, RunRecord};

/// The flags of a training command (`pretrain`, `finetune`): the common ones and `--resume`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Continue the run in this directory from its latest checkpoint (from step 0 when it was
    /// stopped before its first), with its own config.
    #[arg(long, value_name = "RUN", conflicts_with_all = ["config", "set", "output_dir", "overwrite"])]
    pub resume: Option<PathBuf>,
}

/// Flags common to `pretrain`, `finetune`, `evaluate`, `infer`, `sweep` and `inspect`.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// YAML config; `extends:` inside it names base files. Without it, the built-in defaults
    /// (EfficientNet-Lite0 encoder, the sample photos in data/samples).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override one config key, e.g. `--set data.loader.batch_size=16`; repeatable, applied
    /// after the file, in order. Values are read as YAML.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Directory the run writes to [default: runs/<command>/<UTC time>].
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Device: cpu, wgpu, cuda:N or cuda:auto (the GPU of a data-parallel rank's place on its
    /// machine); a backend must be compiled in, see README.
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    pub device: DeviceSpec,
    /// Write into an output directory that already holds a run.
    #[arg(long)]
    pub overwrite: bool,
}

impl CommonArgs {
    pub fn load_config(&self) -> Result<ExperimentConfig, ConfigError> {
        load(self.config.as_deref(), &self.set)
    }

    pub fn device(&self) -> Result<Device, crate::device::DeviceError> {
        self.device.device()
    }

    /// The device of this rank: `cuda:auto` is the GPU of its rank on its machine.
    pub fn device_on(&self, world: &World) -> Result<Device, crate::device::DeviceError> {
        self.device.on_local_rank(world.local_rank()).device()
    }

    /// Creates the run directory and records the resolved config, seed, git commit and
    /// command line in it.
    pub fn start_run(&self, command: &str, config: &ExperimentConfig) -> Result<RunDir, RunError> {
        self.start_run_with(command, config, |_| Ok(()))
    }

    /// `start_run`, writing what the run needs besides its config (`first`) before `run.json`:
    /// a directory with `run.json` is a run, and a run is then complete enough to resume from
    /// the moment it exists.
    pub fn start_run_with(
        &self,
        command: &str,
        config: &ExperimentConfig,
        first: impl FnOnce(&Path) -> Result<(), RunError>,
    ) -> Result<RunDir, RunError> {
        let run = match &self.output_dir {
            Some(path) => {
                // A run never deletes what it reads, nor writes into its data.
                for input in config.data.input_paths() {
                    crate::run::check_outside(path, input)?;
                }
                let weights = &config.model.weights;
                let read = [&weights.vision, &weights.text_encoder, &weights.llm]
                    .into_iter()
                    .flatten()
                    .map(PathBuf::as_path)
                    .chain(config.finetune.pretrained.as_deref());
                for input in read {
                    crate::run::check_apart(path, input)?;
                }
                RunDir::create(path, self.overwrite)?
            }
            None => RunDir::create_unique(&crate::run::default_runs(command))?,
        };
        first(run.path())?;
        run.record(
            config,
            &RunRecord::current(command, config.seed, &self.device.to_string()),
        )?;
        Ok(run)
    }
}

/// The run directory of a job, on every rank: `leader` (run on rank 0 only) makes or resumes
/// it and returns it with what it learnt doing so; the other ranks get `None` and the
/// directory rank 0 sends them, and never create one of their own.
pub fn agree_on_run<T, E: From<RunError>>(
    world: &World,
    leader: impl FnOnce() -> Result<(T, PathBuf), E>,
) -> Result<(Option<T>, PathBuf), E> {
    let (made, bytes) = if world.is_leader() {
        let (made, dir) = leader()?;
        (Some(made), dir.into_os_string().into_encoded_bytes())
    } else {
        (None, Vec::new())
    };
    let bytes = world.broadcast(bytes);
    let text = String::from_utf8(bytes).map_err(|e| RunError::Io {
        path: PathBuf::from(String::from_utf8_lossy(e.as_bytes()).into_owned()),
        source: std::io::Error::other(
            "rank 0's run directory is not UTF-8, which data-parallel runs need",
        ),
    })?;
    Ok((made, PathBuf::from(text)))
}

/// An error unless every rank trains with the same config.
pub fn check_same_config(world: &World, config: &ExperimentConfig) -> Result<(), DistributedError> {
    let text = serde_json::to_vec(config).unwrap_or_default();
    world.check_same("the config", &text)
}
