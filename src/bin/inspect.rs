//! `inspect`: look at what a config, a dataset or a checkpoint amounts to, without training.

mod common;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use calm::cli::CommonArgs;
use clap::{Parser, Subcommand};

/// Inspect configs, datasets and model forward passes.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    /// Print the resolved config (defaults, `extends:` files, `--set` overrides) as YAML.
    Config {
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Run the configured dataset once through decoding, transforms and batching; report
    /// counts and every skipped file.
    Data {
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Run one model component on inputs from a safetensors file and write its outputs, to
    /// compare a checkpoint against a reference implementation.
    Forward {
        /// The component's architecture.
        #[arg(long, value_enum)]
        arch: Arch,
        /// Checkpoint: a directory as HF `save_pretrained` writes it (config.json +
        /// safetensors) for clip-vision, qformer and bert; a `.pth` file or a folder holding
        /// one for efficientnet-lite0.
        #[arg(long, value_name = "DIR")]
        checkpoint: PathBuf,
        /// Input tensors (safetensors): `pixel_values` for the image encoders;
        /// `query_embeds`, `encoder_hidden_states` and optionally `encoder_attention_mask`
        /// for qformer; `input_ids` and optionally `attention_mask`, `token_type_ids` for bert.
        #[arg(long, value_name = "FILE")]
        inputs: PathBuf,
        /// Where to write the output tensors (safetensors).
        #[arg(long, value_name = "FILE")]
        output: PathBuf,
        /// Device: cpu, wgpu or cuda:N.
        #[arg(long, default_value = "cpu", value_name = "DEVICE")]
        device: calm::device::DeviceSpec,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Arch {
    ClipVision,
    #[value(name = "efficientnet-lite0")]
    EfficientnetLite0,
    Qformer,
    Bert,
    Llama,
}

fn main() -> ExitCode {
    common::main_with("inspect", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Config { common } => {
            print!("{}", calm::config::to_yaml(&common.load_config()?)?);
            Ok(())
        }
        What::Data { common } => {
            let config = common.load_config()?;
            let device = common.device()?;
            let report = calm::data::check_pipeline(
                &config.data,
                &config.model.vision,
                config.seed,
                &device,
            )
            .context("reading the dataset")?;
            for skip in &report.skipped {
                println!("skipped {}: {}", skip.what, skip.reason);
            }
            println!(
                "{} images, {} loaded in {} batches of shape {:?}, {} skipped",
                report.images,
                report.loaded,
                report.batches,
                report.first_batch_shape.unwrap_or_default(),
                report.skipped.len()
            );
            Ok(())
        }
        What::Forward {
            arch,
            checkpoint,
            inputs,
            output,
            device,
        } => {
            let device = device.device()?;
            let report = match arch {
                Arch::ClipVision => {
                    calm::io::forward::clip_vision(&checkpoint, &inputs, &output, &device)?
                }
                Arch::EfficientnetLite0 => {
                    calm::io::forward::efficientnet_lite0(&checkpoint, &inputs, &output, &device)?
                }
                Arch::Qformer => {
                    calm::io::forward::qformer(&checkpoint, &inputs, &output, &device)?
                }
                Arch::Bert => calm::io::forward::bert(&checkpoint, &inputs, &output, &device)?,
                Arch::Llama => calm::io::forward::llama(&checkpoint, &inputs, &output, &device)?,
            };
            println!(
                "{} weights loaded, {} checkpoint tensors unused; wrote {}",
                report.applied.len(),
                report.unexpected.len(),
                output.display()
            );
            Ok(())
        }
    }
}
