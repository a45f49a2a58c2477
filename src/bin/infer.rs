//! `infer`: score, comment on, suggest improvements for, or assess in a user's context, one
//! or many photos with a fine-tuned run. A missing or unreadable image is reported on stderr
//! by its path and skipped (`--strict` makes it fatal).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use calm::data::instruct::prompts;
use calm::device::DeviceSpec;
use calm::experiment::finetune;
use calm::runners::tasks::Runner;
use calm::serve::ServeConfig;
use clap::{Parser, Subcommand};
use image::RgbImage;

/// Score, comment on, assess in context or suggest improvements for photos.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    task: Sub,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// CSV `image,score,score_numeric,score_levels,score_distribution,score_regression`:
    /// the number the model writes, the expectation over the five level words (1..10), the
    /// score heads' distribution expectation and regression (empty for a model fine-tuned
    /// without heads), and the config's default readout (`infer.score_readout`) as `score`.
    Score(Inputs),
    /// A comment on each photo's aesthetics.
    Comment(Inputs),
    /// What to change to make each photo better (zero-shot in the paper's setup).
    Suggest(Inputs),
    /// The score a user would give, from k of the user's rated photos given in context.
    Personalize {
        #[command(flatten)]
        inputs: Inputs,
        /// CSV of the user's rated photos, `image,score` rows (a header line is allowed);
        /// relative paths are read from the CSV's folder when not found as given.
        #[arg(long, value_name = "RATED.csv")]
        examples: PathBuf,
    },
    /// Serve the four tasks over HTTP until SIGINT or SIGTERM: a JSON API, OpenAI's
    /// `/v1/chat/completions`, and a web page at `/` (docs/serve.md).
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Where to listen; loopback unless asked, as the server has no authentication. Port 0
    /// picks a free port (the address is printed).
    #[arg(long, value_name = "HOST:PORT", default_value_t = ServeConfig::default().addr)]
    addr: std::net::SocketAddr,
    /// Requests that may wait for the model; one more is answered 503.
    #[arg(long, value_name = "N", default_value_t = ServeConfig::default().queue)]
    queue: usize,
    /// Seconds a request may take, its wait included; past it the answer is 504.
    #[arg(long, value_name = "S", default_value_t = ServeConfig::default().timeout.as_secs_f64())]
    timeout_s: f64,
    /// The largest request body, in MiB; more is answered 413.
    #[arg(long, value_name = "MB", default_value_t = ServeConfig::default().max_body_bytes as f64 / MIB)]
    max_body_mb: f64,
    /// The most pixels an image may declare, in millions, checked before decoding.
    #[arg(long, value_name = "MP", default_value_t = ServeConfig::default().max_pixels as f64 / 1e6)]
    max_megapixels: f64,
    /// Images (rated examples included) in one request.
    #[arg(long, value_name = "N", default_value_t = ServeConfig::default().max_images)]
    max_images: usize,
}

/// The run every task loads, and how.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// A fine-tuning run directory, or one of its checkpoint folders.
    #[arg(long, value_name = "RUN")]
    checkpoint: PathBuf,
    /// Override a key of the run's config, e.g. `--set infer.score_readout=numeric`, or
    /// `--set infer.batch_size=1` (for `serve`: no batching).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Device: cpu, wgpu or cuda:N.
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    device: DeviceSpec,
    /// Read a GGUF LLM's matrices from their quantised blocks (Q4_0, Q4_1, Q8_0, Q4_K,
    /// Q6_K) instead of holding them in f32 as fine-tuning and `evaluate` do: a fraction of the
    /// memory and faster decoding, but answers and scores can differ from the run's own
    /// figures where tokens nearly tie. A run that trained the LLM's own weights stays f32.
    #[arg(long)]
    quantized: bool,
}

impl RunArgs {
    /// The run, its config with `--set`'s overrides.
    fn find(&self) -> anyhow::Result<finetune::FinetunedRun> {
        let mut found = finetune::find_run(&self.checkpoint)
            .with_context(|| format!("reading the run {}", self.checkpoint.display()))?;
        if !self.set.is_empty() {
            found.config = calm::config::load(
                Some(&found.dir.join(calm::run::RunLayout::RESOLVED_CONFIG)),
                &self.set,
            )?;
        }
        Ok(found)
    }

    fn weights(&self) -> calm::io::llama::GgufWeights {
        if self.quantized {
            calm::io::llama::GgufWeights::Quantized
        } else {
            calm::io::llama::GgufWeights::Dequantized
        }
    }
}

const MIB: f64 = (1u64 << 20) as f64;

#[derive(Debug, clap::Args)]
struct Inputs {
    #[command(flatten)]
    run: RunArgs,
    /// Write here instead of stdout (CSV for score and personalize, JSON lines otherwise).
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// A text file of image paths, one a line, read before the IMAGE arguments.
    #[arg(long, value_name = "FILE")]
    list: Option<PathBuf>,
    /// Stop at the first missing or unreadable image instead of skipping it.
    #[arg(long)]
    strict: bool,
    /// Images to process.
    #[arg(value_name = "IMAGE")]
    images: Vec<PathBuf>,
}

fn main() -> ExitCode {
    calm::commands::main_with("infer", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    // The rated examples are read before the model: a bad row costs nothing.
    let (inputs, rated) = match &args.task {
        Sub::Score(i) | Sub::Comment(i) | Sub::Suggest(i) => (i, Vec::new()),
        Sub::Personalize { inputs, examples } => (inputs, read_examples(examples)?),
        Sub::Serve(serve) => return run_serve(serve),
    };
    let mut paths = Vec::new();
    if let Some(list) = &inputs.list {
        paths.extend(calm::data::formats::read_list(list)?);
    }
    paths.extend(inputs.images.iter().cloned());
    if paths.is_empty() {
        bail!("no images given (pass IMAGE arguments or --list FILE)");
    }
    let device = inputs.run.device.device()?;
    let found = inputs.run.find()?;
    let weights = inputs.run.weights();
    let loaded =
        finetune::load_finetuned_with(&found, &device, weights).context("loading the model")?;
    let transform = found
        .config
        .data
        .transform(&found.config.model.vision)
        .centred();
    let runner = Runner {
        loaded: &loaded,
        transform: &transform,
        config: &found.config.infer,
    };
    let (kept, images) = read_images(&runner, &paths, inputs.strict)?;
    if images.is_empty() {
        bail!("none of the {} images could be read", paths.len());
    }
    let mut out: Box<dyn Write> = match &inputs.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(calm::console::Stdout),
    };
    let jsonl = inputs.output.is_some();
    match &args.task {
        Sub::Score(_) => {
            let scores = runner.score(&images)?;
            writeln!(
                out,
                "image,score,score_numeric,score_levels,score_distribution,score_regression"
            )?;
            for (path, s) in kept.iter().zip(&scores) {
                writeln!(
                    out,
                    "{},{},{},{},{},{}",
                    calm::data::formats::csv_field(&path.display().to_string()),
                    number(s.score),
                    number(s.score_numeric),
                    number(Some(s.score_levels)),
                    number(s.score_distribution),
                    number(s.score_regression)
                )?;
            }
        }
        Sub::Comment(_) | Sub::Suggest(_) => {
            let (task, prompt) = match &args.task {
                Sub::Comment(_) => ("comment", prompts::COMMENT),
                _ => ("suggestion", prompts::SUGGEST),
            };
            for (path, image) in kept.iter().zip(&images) {
                let text = runner
                    .describe(std::slice::from_ref(image), prompt)?
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                if jsonl {
                    let line = serde_json::json!({"image": path.display().to_string(), task: text});
                    writeln!(out, "{line}")?;
                } else {
                    writeln!(out, "{}\n{text}\n", path.display())?;
                }
                out.flush()?;
            }
        }
        Sub::Serve(_) => {}
        Sub::Personalize {
            examples: examples_path,
            ..
        } => {
            // Unreadable examples follow the images' policy: skipped, or fatal with --strict.
            let mut examples = Vec::with_capacity(rated.len());
            for (path, score) in &rated {
                let (_, mut image) =
                    read_images(&runner, std::slice::from_ref(path), inputs.strict)
                        .context("reading the rated examples")?;
                examples.extend(image.pop().map(|image| (image, *score)));
            }
            if examples.is_empty() {
                bail!(
                    "none of the {} rated examples in {} could be read",
                    rated.len(),
                    examples_path.display()
                );
            }
            let scores = runner.personalize(&examples, &images)?;
            writeln!(out, "image,score,score_numeric,score_expected")?;
            for (path, s) in kept.iter().zip(&scores) {
                writeln!(
                    out,
                    "{},{},{},{}",
                    calm::data::formats::csv_field(&path.display().to_string()),
                    number(Some(s.score)),
                    number(s.score_numeric),
                    number(Some(s.score_expected))
                )?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

fn run_serve(args: &ServeArgs) -> anyhow::Result<()> {
    let positive = |value: f64, flag: &str| {
        if value.is_finite() && value > 0.0 {
            Ok(value)
        } else {
            Err(anyhow::anyhow!(
                "{flag} must be a positive number, not {value}"
            ))
        }
    };
    let config = ServeConfig {
        addr: args.addr,
        queue: args.queue,
        timeout: std::time::Duration::try_from_secs_f64(positive(args.timeout_s, "--timeout-s")?)
            .context("--timeout-s")?,
        max_body_bytes: (positive(args.max_body_mb, "--max-body-mb")? * MIB) as usize,
        max_pixels: (positive(args.max_megapixels, "--max-megapixels")? * 1e6) as u64,
        max_images: args.max_images,
    };
    let device = args.run.device.device()?;
    let found = args.run.find()?;
    calm::errln!("serve: loading {}", found.dir.display());
    calm::serve::serve(found, device, args.run.weights(), config, |addr| {
        drop(calm::outln!("serve: listening on http://{addr}"));
    })?;
    calm::errln!("serve: stopped");
    Ok(())
}

/// The readable images with their paths; the others reported on stderr (or fatal).
fn read_images(
    runner: &Runner<'_>,
    paths: &[PathBuf],
    strict: bool,
) -> anyhow::Result<(Vec<PathBuf>, Vec<Arc<RgbImage>>)> {
    let (read, skipped) = runner.load_readable(paths);
    // The reason names the file.
    for (_, reason) in skipped {
        if strict {
            bail!("{reason}");
        }
        calm::errln!("infer: skipping {reason}");
    }
    Ok(read.into_iter().unzip())
}

/// `image,score` rows; a first line whose score is not a number is a header.
fn read_examples(path: &Path) -> anyhow::Result<Vec<(PathBuf, f64)>> {
    let text = calm::files::read_string(path, calm::files::MAX_ANNOTATION_BYTES)
        .with_context(|| format!("reading {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((image, score)) = line.rsplit_once(',') else {
            bail!("{} line {}: expected `image,score`", path.display(), i + 1);
        };
        let image = image.trim().trim_matches('"');
        let score: f64 = match score.trim().parse::<f64>() {
            Ok(s) if s.is_finite() => s,
            Ok(s) => bail!(
                "{} line {}: the score {s} is not a finite number",
                path.display(),
                i + 1
            ),
            Err(_) if rows.is_empty() && i == 0 => continue,
            Err(_) => bail!(
                "{} line {}: `{}` is not a score",
                path.display(),
                i + 1,
                score.trim()
            ),
        };
        let as_given = PathBuf::from(image);
        let image = if as_given.exists() || as_given.is_absolute() {
            as_given
        } else {
            base.join(image)
        };
        rows.push((image, score));
    }
    if rows.is_empty() {
        bail!("{} has no rated images", path.display());
    }
    Ok(rows)
}

fn number(value: Option<f64>) -> String {
    value.map(|v| format!("{v:.4}")).unwrap_or_default()
}
