//! What every command-line tool shares: the common flags, loading the config, choosing the
//! device and starting a run directory.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::config::{ConfigError, ExperimentConfig, load};
use crate::device::DeviceSpec;
use crate::run::{RunDir, RunError, RunRecord};

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
    /// Device: cpu, wgpu or cuda:N (a backend must be compiled in, see README).
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

    /// Creates the run directory and records the resolved config, seed, git commit and
    /// command line in it.
    pub fn start_run(&self, command: &str, config: &ExperimentConfig) -> Result<RunDir, RunError> {
        let run = match &self.output_dir {
            Some(path) => RunDir::create(path, self.overwrite)?,
            None => RunDir::create_unique(&Path::new("runs").join(command))?,
        };
        run.record(
            config,
            &RunRecord::current(command, config.seed, &self.device.to_string()),
        )?;
        Ok(run)
    }
}
