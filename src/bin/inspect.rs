//! `inspect`: look at what a config, a dataset or a checkpoint amounts to, without training.

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
    /// Predict one rank's peak memory for a training job: frozen and trained weights,
    /// gradients, optimiser state, activations and fixed overhead, from the config's shapes,
    /// precision, activation checkpointing, ranks and ZeRO stage.
    Memory {
        #[arg(long, value_enum)]
        job: MemoryJobArg,
        #[command(flatten)]
        common: CommonArgs,
        /// Data-parallel ranks (one process per device).
        #[arg(long, default_value_t = 1)]
        ranks: usize,
        /// Each device's memory, e.g. 80GB or 24GiB: says whether the job fits.
        #[arg(long, value_name = "SIZE", value_parser = calm::experiment::memory::parse_bytes)]
        device_memory: Option<u64>,
        /// Fine-tuning: the most tokens of a row the loss is taken on (answers); the LLM's
        /// head runs at those alone. Default: every token of `finetune.max_length`, an upper
        /// bound that the head's logits make large for short answers.
        #[arg(long, value_name = "N")]
        supervised_tokens: Option<usize>,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
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
        /// safetensors) for clip-vision, qformer, bert and llama; a `.pth` file or a folder
        /// holding one for efficientnet-lite0; a `.gguf` file for llama.
        #[arg(long, value_name = "DIR")]
        checkpoint: PathBuf,
        /// Input tensors (safetensors): `pixel_values` for the image encoders;
        /// `query_embeds`, `encoder_hidden_states` and optionally `encoder_attention_mask`
        /// for qformer; `input_ids` and optionally `attention_mask`, `token_type_ids` for bert;
        /// `input_ids` and optionally `attention_mask` for llama (which writes `logits`).
        #[arg(long, value_name = "FILE")]
        inputs: PathBuf,
        /// Where to write the output tensors (safetensors).
        #[arg(long, value_name = "FILE")]
        output: PathBuf,
        /// Device: cpu, wgpu or cuda:N.
        #[arg(long, default_value = "cpu", value_name = "DEVICE")]
        device: calm::device::DeviceSpec,
    },
    /// Answer a prompt with a LLaMA-family model, streaming the reply to stdout. The prompt is
    /// wrapped in the model's chat template (ChatML for SmolLM2, Vicuna v1 for LLaMA
    /// vocabularies) unless `--raw`; decoding is greedy unless a sampling flag is given.
    Generate {
        /// An HF checkpoint folder (with tokenizer.json) or a `.gguf` file.
        #[arg(long, value_name = "DIR_OR_GGUF")]
        checkpoint: PathBuf,
        #[arg(long)]
        prompt: String,
        /// Feed the prompt as it is, without the chat template.
        #[arg(long)]
        raw: bool,
        #[arg(long, default_value_t = 128)]
        max_new_tokens: usize,
        /// Sample at this temperature [default: greedy; 1.0 when --top-k or --top-p is given].
        #[arg(long)]
        temperature: Option<f32>,
        /// Sample from the k most likely tokens.
        #[arg(long)]
        top_k: Option<usize>,
        /// Sample from the smallest set of tokens whose probability reaches p.
        #[arg(long)]
        top_p: Option<f32>,
        #[arg(long, default_value_t = 1.0)]
        repetition_penalty: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Stop when the reply contains this text (repeatable); the template's own end
        /// marker always stops.
        #[arg(long = "stop", value_name = "TEXT")]
        stop: Vec<String>,
        /// Generate all --max-new-tokens: the end-of-sequence tokens and the template's end
        /// marker do not stop (--stop still does). For timings, as llama.cpp's --ignore-eos.
        #[arg(long)]
        ignore_eos: bool,
        /// Hold a GGUF file's matrices in f32, as training does, instead of reading them from
        /// their quantised blocks (Q4_0, Q4_1, Q8_0, Q4_K, Q6_K): about 8x the memory of a 4-bit
        /// file.
        #[arg(long)]
        dequantize: bool,
        /// Device: cpu, wgpu or cuda:N.
        #[arg(long, default_value = "cpu", value_name = "DEVICE")]
        device: calm::device::DeviceSpec,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum MemoryJobArg {
    Pretrain,
    Finetune,
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
    calm::commands::main_with("inspect", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Config { common } => {
            calm::console::out(&calm::config::to_yaml(&common.load_config()?)?)?;
            Ok(())
        }
        What::Memory {
            job,
            common,
            ranks,
            device_memory,
            supervised_tokens,
            json,
        } => {
            use calm::experiment::memory::{Architectures, MemoryJob, MemoryQuery, estimate};
            let config = common.load_config()?;
            let job = match job {
                MemoryJobArg::Pretrain => MemoryJob::Pretrain,
                MemoryJobArg::Finetune => MemoryJob::Finetune,
            };
            let (architectures, sources) = Architectures::of(&config)?;
            if supervised_tokens.is_some() && job == MemoryJob::Pretrain {
                anyhow::bail!(
                    "--supervised-tokens sizes fine-tuning's LLM head; pretraining has none"
                );
            }
            let query = MemoryQuery {
                job,
                ranks,
                device_memory,
                supervised_tokens,
            };
            let e = estimate(&config, &architectures, &query)?;
            if json {
                let mut value = serde_json::to_value(&e)?;
                value["read"] = serde_json::json!(sources);
                calm::outln!("{}", serde_json::to_string_pretty(&value)?)?;
            } else {
                print_memory(&e, &sources)?;
            }
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
                calm::outln!("skipped {}: {}", skip.what, skip.reason)?;
            }
            calm::outln!(
                "{} images, {} loaded in {} batches of shape {:?}, {} skipped",
                report.images,
                report.loaded,
                report.batches,
                report.first_batch_shape.unwrap_or_default(),
                report.skipped.len()
            )?;
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
            calm::outln!(
                "{} weights loaded, {} checkpoint tensors unused; wrote {}",
                report.applied.len(),
                report.unexpected.len(),
                output.display()
            )?;
            Ok(())
        }
        What::Generate {
            checkpoint,
            prompt,
            raw,
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            repetition_penalty,
            seed,
            stop,
            ignore_eos,
            dequantize,
            device,
        } => {
            let sampling = top_k.is_some() || top_p.is_some();
            let config = calm::model::generate::GenerationConfig {
                max_new_tokens,
                temperature: temperature.unwrap_or(if sampling { 1.0 } else { 0.0 }),
                top_k,
                top_p,
                repetition_penalty,
                seed,
                use_cache: true,
            };
            // Checked before the model is read: a bad flag costs nothing.
            config.validate("generation").map_err(|e| {
                let field = e.key.rsplit('.').next().unwrap_or_default();
                anyhow::anyhow!("--{}: {}", field.replace('_', "-"), e.message)
            })?;
            let device = device.device()?;
            let weights = if dequantize {
                calm::io::llama::GgufWeights::Dequantized
            } else {
                calm::io::llama::GgufWeights::Quantized
            };
            let (model, tok) = calm::io::llama::load_chat_model_with(&checkpoint, &device, weights)
                .with_context(|| format!("loading {}", checkpoint.display()))?;
            let text = if raw {
                prompt
            } else {
                tok.template
                    .prompt(&[(calm::model::chat::Role::User, prompt.as_str())])
            };
            let ids = tok.encode_prompt(&text)?;
            let prompt_tokens = ids.len();
            let mut stops: Vec<String> = stop;
            if !ignore_eos {
                stops.extend(tok.template.stop_strings().iter().map(|s| s.to_string()));
            }
            let eos: &[u32] = if ignore_eos { &[] } else { &tok.eos };
            let mut printed = 0;
            let mut write_error = None;
            // Streams the reply as it grows. Text that could be the start of a stop string,
            // or half of a multi-byte character, is held back until the next token settles it.
            let mut stream = |reply: &[u32], last: bool| -> bool {
                let text = tok.decode(reply).unwrap_or_default();
                let stop_at = stops.iter().filter_map(|s| text.find(s.as_str())).min();
                let end = match stop_at {
                    Some(at) => at,
                    None if last => text.len(),
                    None => {
                        let held = stops
                            .iter()
                            .flat_map(|s| {
                                (1..s.len())
                                    .filter(|&n| s.is_char_boundary(n))
                                    .map(move |n| &s[..n])
                            })
                            .filter(|prefix| text.ends_with(prefix))
                            .map(str::len)
                            .max()
                            .unwrap_or(0);
                        let mut end = text.len() - held;
                        while end > printed && text[..end].ends_with('\u{FFFD}') {
                            end -= '\u{FFFD}'.len_utf8();
                        }
                        end
                    }
                };
                if end > printed && text.is_char_boundary(printed) && text.is_char_boundary(end) {
                    if let Err(e) = calm::console::out(&text[printed..end]) {
                        write_error = Some(e);
                        return true;
                    }
                    printed = end;
                }
                // Nobody reads the rest once stdout is closed: stop generating.
                stop_at.is_some() || calm::console::stdout_closed()
            };
            // The prompt's time runs to the first new token (the prefill and one sampling);
            // the generated tokens' from there to the last, as llama.cpp counts them.
            let start = std::time::Instant::now();
            let mut first = None;
            let replies = calm::model::generate::generate(
                &model,
                &[ids],
                eos,
                &config,
                |_, reply| stream(reply, false),
                |_, _| {
                    first.get_or_insert_with(std::time::Instant::now);
                },
            )?;
            let end = std::time::Instant::now();
            stream(&replies[0], true);
            if let Some(e) = write_error {
                return Err(e.into());
            }
            calm::outln!()?;
            let generated = replies[0].len();
            let first = first.unwrap_or(end);
            let rate = |n: usize, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
            let peak = calm::train::resident::peak_bytes()
                .map(|b| format!(", peak RSS {} MB", b / 1_000_000))
                .unwrap_or_default();
            calm::errln!(
                "timings: prompt {prompt_tokens} tokens at {:.1} tokens/s, generated {generated} tokens at {:.1} tokens/s{peak}",
                rate(prompt_tokens, (first - start).as_secs_f64()),
                rate(generated.saturating_sub(1), (end - first).as_secs_f64()),
            );
            Ok(())
        }
    }
}

fn gb(bytes: u64) -> String {
    format!("{:.2} GB", bytes as f64 / 1e9)
}

fn print_memory(
    e: &calm::experiment::memory::MemoryEstimate,
    sources: &[String],
) -> anyhow::Result<()> {
    calm::outln!(
        "{:?} on {} rank(s): precision {:?}, activation checkpointing {}, ZeRO {:?}; micro-batch {}",
        e.job,
        e.ranks,
        e.precision,
        if e.activation_checkpointing {
            "on"
        } else {
            "off"
        },
        e.zero,
        e.micro_batch
    )?;
    let rows = [
        (
            "frozen weights",
            e.frozen_weights_bytes,
            format!("{} parameters", e.frozen_parameters),
        ),
        (
            "trained weights",
            e.trained_weights_bytes,
            format!("{} parameters", e.trained_parameters),
        ),
        ("gradients", e.gradients_bytes, String::new()),
        ("optimizer state", e.optimizer_state_bytes, String::new()),
        ("activations", e.activations_bytes, String::new()),
        ("fixed overhead", e.overhead_bytes, String::new()),
    ];
    for (name, bytes, note) in rows {
        calm::outln!("  {name:<16} {:>12}  {note}", gb(bytes))?;
    }
    calm::outln!(
        "  {:<16} {:>12}  a training step",
        "total",
        gb(e.step_bytes)
    )?;
    calm::outln!(
        "  {:<16} {:>12}  the weights, the optimizer state and Burn's copy of it",
        "checkpoint write",
        gb(e.checkpoint_write_bytes)
    )?;
    calm::outln!(
        "  {:<16} {:>12}  per device (the larger)",
        "peak",
        gb(e.per_device_bytes)
    )?;
    if let (Some(memory), Some(fits)) = (e.device_memory_bytes, e.fits) {
        calm::outln!(
            "{} of {} per device: {}",
            gb(e.per_device_bytes),
            gb(memory),
            if fits { "fits" } else { "does NOT fit" }
        )?;
    }
    for a in &e.assumptions {
        calm::outln!("assumes {a}")?;
    }
    for s in sources {
        calm::outln!("{s}")?;
    }
    Ok(())
}
