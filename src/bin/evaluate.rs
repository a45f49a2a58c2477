//! `evaluate`: measure a model on held-out data. `degradations` tells how well a pretrained
//! MFAM's quality head ranks photos above their degraded copies; the four aesthetic tasks come
//! with issue #8.

mod common;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use calm::device::DeviceSpec;
use calm::train::pretrain::{self, Frozen};
use clap::{Parser, Subcommand};

/// Evaluate a model on held-out data; results are JSON on stdout.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Pairwise accuracy with which a pretraining run's quality score ranks each photo above
    /// its degraded copies (every configured kind at each evaluation severity), overall and
    /// per kind, for the run's model and for its random initialisation (same seed).
    Degradations {
        /// A pretraining run directory (or one of its checkpoints/step-N folders).
        #[arg(long, value_name = "RUN")]
        checkpoint: PathBuf,
        /// Folder of photos the run never trained on, e.g. RUN/held_out.
        #[arg(long, value_name = "DIR")]
        images: PathBuf,
        /// Device: cpu, wgpu or cuda:N.
        #[arg(long, default_value = "cpu", value_name = "DEVICE")]
        device: DeviceSpec,
    },
}

fn main() -> ExitCode {
    common::main_with("evaluate", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    match args.task {
        Task::Degradations {
            checkpoint,
            images,
            device,
        } => {
            let device = device.device()?;
            let found = pretrain::find_run(&checkpoint)
                .with_context(|| format!("reading the run {}", checkpoint.display()))?;
            let photos = calm::data::formats::scan_folder(&images, false)
                .with_context(|| format!("listing {}", images.display()))?;
            anyhow::ensure!(!photos.is_empty(), "{} holds no photos", images.display());
            let config = &found.config;
            let frozen = Frozen::load(config, &device).context("loading the frozen encoders")?;
            let model = pretrain::load_pretrained(&found, &frozen, &device)?;
            let report =
                pretrain::evaluate_degradations(config, &frozen, &model, &photos, &device)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
    }
}
