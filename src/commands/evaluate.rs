//! `evaluate`: metrics on files (`scores`, `captions`), the paper's protocols with a fine-tuned
//! model (`task`), and how well a pretraining run's quality head ranks photos above their
//! degraded copies (`degradations`). Results are JSON on stdout; what was left out goes to
//! stderr.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::Layers;
use crate::data::formats::score_table::{match_tables, read_score_table};
use crate::device::DeviceSpec;
use crate::eval::captions::evaluate_captions;
use crate::eval::scores::score_report;
use crate::experiment::ExperimentConfig;
use crate::experiment::{finetune, pretrain};
use crate::runners::protocols::{ProtocolResult, run_protocol};
use crate::runners::tasks::Runner;
use crate::train::pretrain::{Frozen, read_split};
use anyhow::Context;
use clap::{Parser, Subcommand};

/// A score distribution over the ten score bins.
type Bins = [f64; 10];

/// Evaluate predictions or a model; results are JSON on stdout.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Args {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Score metrics of predictions against ground truth: `srcc`, `plcc`, `plcc_logistic`,
    /// `krcc`, `acc` (both sides above 5.0 or both not), `emd1`/`emd2` (when both give
    /// distributions), `mae`, `rmse`, `n`. Images are matched by file name without folders
    /// and extension; unmatched ones are reported on stderr.
    Scores {
        /// CSV with a header: `image,score`, or `image,p1,...,p10` (infer score's CSV works).
        #[arg(long, value_name = "PRED.csv")]
        pred: PathBuf,
        /// The same, or AVA.txt.
        #[arg(long, value_name = "GT.csv")]
        gt: PathBuf,
    },
    /// Captioning metrics as coco-caption computes them: `bleu1`..`bleu4`, `meteor`,
    /// `rouge_l`, `cider`, over the images that have both a prediction and references.
    Captions {
        /// JSON `{"image": "caption"}`.
        #[arg(long, value_name = "PRED.json")]
        pred: PathBuf,
        /// JSON `{"image": ["reference", ...]}`.
        #[arg(long, value_name = "REFS.json")]
        refs: PathBuf,
    },
    /// One of the paper's protocols (configs/eval/) with a fine-tuned run: predictions and
    /// `metrics.json` are written to the results directory, the metrics also to stdout.
    #[command(name = "task")]
    Protocol {
        /// An eval config (its `eval.protocol` names the protocol and data), layered over the
        /// run's own config.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// A fine-tuning run directory, or one of its checkpoint folders.
        #[arg(long, value_name = "RUN")]
        checkpoint: PathBuf,
        /// Override a config key after the eval config, e.g. `--set eval.max_images=100`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Results directory [default: results/eval/<config name>/<run name>].
        #[arg(long, value_name = "DIR")]
        output_dir: Option<PathBuf>,
        /// Replace an earlier evaluation in the results directory (its files are deleted).
        #[arg(long)]
        overwrite: bool,
        /// Device: cpu, wgpu or cuda:N.
        #[arg(long, default_value = "cpu", value_name = "DEVICE")]
        device: DeviceSpec,
    },
    /// Pairwise accuracy with which a pretraining run's quality score ranks each photo above
    /// its degraded copies (every configured kind at each evaluation severity), overall and
    /// per kind, for the run's model and for its random initialisation (same seed).
    Degradations {
        /// A pretraining run directory (or one of its checkpoints/step-N folders), scored by
        /// its quality head; or a fine-tuning run, scored by `infer score`'s readouts.
        #[arg(long, value_name = "RUN")]
        checkpoint: PathBuf,
        /// Folder of photos the run never trained on, e.g. RUN/held_out.
        #[arg(long, value_name = "DIR")]
        images: PathBuf,
        /// Which degradations make the copies: the run's training kinds, or kinds no
        /// built-in run trains on, made with other formulas (brighter, low_contrast,
        /// gaussian_blur, colour_cast, vignette, rotation).
        #[arg(long, value_enum, default_value_t = Kinds::Training)]
        kinds: Kinds,
        /// Device: cpu, wgpu or cuda:N.
        #[arg(long, default_value = "cpu", value_name = "DEVICE")]
        device: DeviceSpec,
    },
    /// Personalized assessment against two simulated raters of opposite taste (bright and
    /// colourful, dark and muted): each rates the run's training photos, `--shots` of them go
    /// into the conversation, and the run's held-out photos are scored; prints each rater's
    /// SRCC with its own taste and with the other's, as JSON.
    Raters {
        /// A fine-tuning run directory, or one of its checkpoint folders.
        #[arg(long, value_name = "RUN")]
        checkpoint: PathBuf,
        /// Rated photos in the conversation.
        #[arg(long, default_value_t = 6)]
        shots: usize,
        /// Device: cpu, wgpu or cuda:N.
        #[arg(long, default_value = "cpu", value_name = "DEVICE")]
        device: DeviceSpec,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Kinds {
    Training,
    Shifted,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.task {
        Task::Scores { pred, gt } => scores(&pred, &gt),
        Task::Captions { pred, refs } => captions(&pred, &refs),
        Task::Protocol {
            config,
            checkpoint,
            set,
            output_dir,
            overwrite,
            device,
        } => protocol(&config, &checkpoint, &set, output_dir, overwrite, &device),
        Task::Degradations {
            checkpoint,
            images,
            kinds,
            device,
        } => degradations(&checkpoint, &images, kinds, &device),
        Task::Raters {
            checkpoint,
            shots,
            device,
        } => raters(&checkpoint, shots, &device),
    }
}

fn raters(checkpoint: &Path, shots: usize, device: &DeviceSpec) -> anyhow::Result<()> {
    let device = device.device()?;
    let found = finetune::find_run(checkpoint)
        .with_context(|| format!("reading the run {}", checkpoint.display()))?;
    let split = read_split(&found.pretrained.dir)?.with_context(|| {
        format!(
            "the pretraining run {} recorded no split of its photos",
            found.pretrained.dir.display()
        )
    })?;
    let config = &found.config;
    let loaded = finetune::load_finetuned(&found, &device).context("loading the model")?;
    let transform = config.data.transform(&config.model.vision).centred();
    let runner = Runner {
        loaded: &loaded,
        transform: &transform,
        config: &config.infer,
    };
    let read = |paths: &[PathBuf]| -> Vec<std::sync::Arc<image::RgbImage>> {
        let (read, skipped) = runner.load_readable(paths);
        for (_, reason) in skipped {
            crate::errln!("evaluate: skipping {reason}");
        }
        read.into_iter().map(|(_, image)| image).collect()
    };
    let rated = read(&split.train);
    let queries = read(&split.held_out);
    let report = crate::runners::raters::evaluate_raters(&runner, &rated, &queries, shots)?;
    crate::outln!("{}", serde_json::to_string_pretty(&report)?)?;
    Ok(())
}

fn scores(pred: &Path, gt: &Path) -> anyhow::Result<()> {
    let p = read_score_table(pred).with_context(|| format!("reading {}", pred.display()))?;
    let g = read_score_table(gt).with_context(|| format!("reading {}", gt.display()))?;
    let m = match_tables(&p, &g);
    report_unmatched("predictions without ground truth", &m.only_pred);
    report_unmatched("ground-truth images without a prediction", &m.only_gt);
    let (pred_scores, gt_scores): (Vec<f64>, Vec<f64>) =
        m.pairs.iter().map(|(p, g)| (p.score, g.score)).unzip();
    let distributions: Option<(Vec<Bins>, Vec<Bins>)> = m
        .pairs
        .iter()
        .map(|(p, g)| Some((p.distribution?, g.distribution?)))
        .collect::<Option<Vec<_>>>()
        .map(|pairs| pairs.into_iter().unzip());
    let report = score_report(
        &pred_scores,
        &gt_scores,
        distributions
            .as_ref()
            .map(|(p, g)| (p.as_slice(), g.as_slice())),
    )
    .with_context(|| format!("{} matched images", m.pairs.len()))?;
    for warning in &report.warnings {
        crate::errln!("evaluate: warning: {warning}");
    }
    crate::outln!("{}", serde_json::to_string_pretty(&report)?)?;
    Ok(())
}

fn captions(pred: &Path, refs: &Path) -> anyhow::Result<()> {
    let p: BTreeMap<String, String> = read_json(pred)?;
    let r: BTreeMap<String, Vec<String>> = read_json(refs)?;
    let only_pred: Vec<&str> = p
        .keys()
        .filter(|k| !r.contains_key(*k))
        .map(String::as_str)
        .collect();
    let only_refs: Vec<&str> = r
        .keys()
        .filter(|k| !p.contains_key(*k))
        .map(String::as_str)
        .collect();
    report_unmatched("predictions without references", &only_pred);
    report_unmatched("referenced images without a prediction", &only_refs);
    let p: BTreeMap<String, String> = p.into_iter().filter(|(k, _)| r.contains_key(k)).collect();
    let r: BTreeMap<String, Vec<String>> =
        r.into_iter().filter(|(k, _)| p.contains_key(k)).collect();
    let scores = evaluate_captions(&p, &r)
        .with_context(|| format!("{} images with a prediction and references", p.len()))?;
    crate::outln!("{}", serde_json::to_string_pretty(&scores)?)?;
    Ok(())
}

fn protocol(
    eval_config: &Path,
    checkpoint: &Path,
    set: &[String],
    output_dir: Option<PathBuf>,
    overwrite: bool,
    device_spec: &DeviceSpec,
) -> anyhow::Result<()> {
    let mut found = finetune::find_run(checkpoint)
        .with_context(|| format!("reading the run {}", checkpoint.display()))?;
    let mut layers = Layers::from_defaults::<ExperimentConfig>()?;
    layers.merge_file(&found.dir.join(crate::run::RunLayout::RESOLVED_CONFIG))?;
    layers.merge_file(eval_config)?;
    for arg in set {
        layers.merge_set(arg)?;
    }
    found.config = layers.resolve()?;
    let config = &found.config;
    let protocol = config
        .eval
        .protocol
        .as_ref()
        .with_context(|| format!("{} names no eval.protocol", eval_config.display()))?;
    let out = output_dir.unwrap_or_else(|| {
        let name = |p: &Path| {
            p.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "eval".into())
        };
        Path::new("results")
            .join("eval")
            .join(name(eval_config))
            .join(name(&found.dir))
    });
    // Old predictions never sit beside a new config: an earlier evaluation there is refused,
    // or deleted whole with --overwrite (never the run being evaluated).
    crate::run::check_apart(&out, &found.dir)?;
    let results = crate::run::RunDir::create(&out, overwrite)?;
    results.record(
        config,
        &crate::run::RunRecord::current("evaluate", config.seed, &device_spec.to_string()),
    )?;
    let device = device_spec.device()?;
    let loaded = finetune::load_finetuned(&found, &device).context("loading the model")?;
    let transform = config.data.transform(&config.model.vision).centred();
    let runner = Runner {
        loaded: &loaded,
        transform: &transform,
        config: &config.infer,
    };
    crate::errln!(
        "evaluate: {} with {} into {}",
        protocol.name(),
        found.dir.display(),
        out.display()
    );
    let result = run_protocol(&config.eval, &runner)
        .with_context(|| format!("running the {} protocol", protocol.name()))?;
    let metrics = match &result {
        ProtocolResult::AvaScoring(r) => {
            let mut csv = String::from(
                "image,score,score_numeric,score_levels,score_distribution,score_regression,mos\n",
            );
            for s in &r.predictions {
                csv.push_str(&format!(
                    "{},{},{},{},{},{},{}\n",
                    crate::data::formats::csv_field(&s.image),
                    number(s.score),
                    number(s.score_numeric),
                    s.score_levels,
                    number(s.score_distribution),
                    number(s.score_regression),
                    s.mos
                ));
            }
            write(&out.join("predictions.csv"), csv.as_bytes())?;
            report_skipped(&r.skipped);
            serde_json::to_value(r)?
        }
        ProtocolResult::AvaCaptions(r) => {
            write(
                &out.join("predictions.json"),
                serde_json::to_string_pretty(&r.predictions)?.as_bytes(),
            )?;
            report_skipped(&r.skipped);
            serde_json::to_value(r)?
        }
        ProtocolResult::FlickrAes(r) => {
            let mut csv =
                String::from("shots,seed,worker,image,score,score_numeric,score_expected,rating\n");
            for p in &r.predictions {
                csv.push_str(&format!(
                    "{},{},{},{},{},{},{},{}\n",
                    p.shots,
                    p.seed,
                    crate::data::formats::csv_field(&p.worker),
                    crate::data::formats::csv_field(&p.image),
                    p.score,
                    number(p.score_numeric),
                    p.score_expected,
                    p.rating
                ));
            }
            write(&out.join("predictions.csv"), csv.as_bytes())?;
            report_skipped(&r.skipped);
            serde_json::to_value(r)?
        }
    };
    let metrics = serde_json::json!({
        "protocol": protocol.name(),
        "checkpoint": found.dir.display().to_string(),
        "metrics": metrics,
    });
    let text = serde_json::to_string_pretty(&metrics)?;
    write(
        &out.join(crate::run::RunLayout::EVAL_METRICS),
        text.as_bytes(),
    )?;
    crate::outln!("{text}")?;
    Ok(())
}

fn degradations(
    checkpoint: &Path,
    images: &Path,
    kinds: Kinds,
    device: &DeviceSpec,
) -> anyhow::Result<()> {
    let device = device.device()?;
    let photos = crate::data::formats::scan_folder(images, false)
        .with_context(|| format!("listing {}", images.display()))?;
    anyhow::ensure!(!photos.is_empty(), "{} holds no photos", images.display());
    // A fine-tuning run records the pretraining run it started from; a pretraining run does
    // not.
    if let Ok(found) = finetune::find_run(checkpoint) {
        return finetuned_degradations(&found, &photos, kinds, &device);
    }
    let found = pretrain::find_run(checkpoint)
        .with_context(|| format!("reading the run {}", checkpoint.display()))?;
    let config = &found.config;
    let frozen = Frozen::load(&config.model, &device).context("loading the frozen encoders")?;
    let model = pretrain::load_pretrained(&found, &frozen, &device)?;
    let kinds = match kinds {
        Kinds::Training => config.pretrain.pairs.degradations.clone(),
        Kinds::Shifted => crate::data::degrade::Degradation::SHIFTED.to_vec(),
    };
    let report =
        pretrain::evaluate_degradations(config, &frozen, &model, &photos, &kinds, &device)?;
    for skipped in &report.skipped {
        crate::errln!("evaluate: skipping {skipped}");
    }
    crate::outln!("{}", serde_json::to_string_pretty(&report)?)?;
    Ok(())
}

/// `degradations` for a fine-tuned model: its `infer score` readouts on the pairs.
fn finetuned_degradations(
    found: &finetune::FinetunedRun,
    photos: &[PathBuf],
    kinds: Kinds,
    device: &burn::tensor::Device,
) -> anyhow::Result<()> {
    let config = &found.config;
    let loaded = finetune::load_finetuned(found, device).context("loading the model")?;
    let (read, skipped) = crate::data::load_photos(photos, config.data.loader.bad_images)?;
    for reason in &skipped {
        crate::errln!("evaluate: skipping {}: {}", reason.what, reason.reason);
    }
    let images: Vec<image::RgbImage> = read.into_iter().map(|(_, image)| image).collect();
    anyhow::ensure!(!images.is_empty(), "none of the photos could be read");
    let kinds = match kinds {
        Kinds::Training => config.pretrain.pairs.degradations.clone(),
        Kinds::Shifted => crate::data::degrade::Degradation::SHIFTED.to_vec(),
    };
    let transform = config.data.transform(&config.model.vision);
    let severities = &config.pretrain.evaluation.severities;
    let pairs = crate::eval::degradations::EvalPairs::new(
        &images,
        &transform,
        &kinds,
        severities,
        config.seed,
    )
    .map_err(|(i, e)| anyhow::anyhow!("photo {i}: {e}"))?;
    let transform = transform.centred();
    let runner = Runner {
        loaded: &loaded,
        transform: &transform,
        config: &config.infer,
    };
    let report = crate::runners::held_out::rank_pairs(&runner, &pairs, &kinds, severities)?;
    crate::outln!("{}", serde_json::to_string_pretty(&report)?)?;
    Ok(())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = crate::files::read_string(path, crate::files::MAX_ANNOTATION_BYTES)
        .with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    crate::io::atomic::write_atomic(path, bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// Up to ten names, then how many more.
fn report_unmatched(what: &str, names: &[&str]) {
    if names.is_empty() {
        return;
    }
    let shown: Vec<&str> = names.iter().take(10).copied().collect();
    let more = names.len().saturating_sub(shown.len());
    let tail = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    crate::errln!(
        "evaluate: {} {what}: {}{tail}",
        names.len(),
        shown.join(", ")
    );
}

fn report_skipped(skipped: &[crate::runners::protocols::Skipped]) {
    for s in skipped {
        crate::errln!("evaluate: skipping {}", s.reason);
    }
}

fn number(value: Option<f64>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}
