//! The fine-tuning check on photos the run never saw: the pretraining run's held-out photos
//! and their degraded copies (`eval::degradations::EvalPairs`) are written as PNG files with a
//! `pairs.csv` naming which copy (by file name) belongs to which original, so that `infer score` on those
//! files can be scored by anyone; the same files are scored here through the same runner.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::tasks::{Runner, TaskError};
use crate::data::degrade::Degradation;
use crate::data::instruct::prompts;
use crate::data::transform::Transform;
use crate::eval::degradations::{EvalPairs, PairwiseAccuracy, ScoredPair, pairwise_accuracy};
use crate::eval::tasks::{Score, names_defect, readouts, states_defect};

pub const PAIRS_CSV: &str = "pairs.csv";
pub const IMAGE_LIST: &str = "images.txt";

#[derive(Debug, thiserror::Error)]
pub enum HeldOutError {
    #[error("{path}: {reason}")]
    Image { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One degraded copy and the original it was made from.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyFile {
    pub original: usize,
    pub kind: Degradation,
    pub severity: f32,
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HeldOutSet {
    pub originals: Vec<PathBuf>,
    pub copies: Vec<CopyFile>,
    /// Photos that could not be read, with why (left out under `BadImagePolicy::Skip`).
    pub skipped: Vec<String>,
}

impl HeldOutSet {
    /// Every file, originals first: the order of `images.txt`.
    pub fn images(&self) -> Vec<PathBuf> {
        self.originals
            .iter()
            .cloned()
            .chain(self.copies.iter().map(|c| c.path.clone()))
            .collect()
    }

    /// Pairwise accuracy from one score per file of `images()`.
    pub fn accuracy(&self, scores: &[f64]) -> Option<PairwiseAccuracy> {
        let n = self.originals.len();
        let pairs: Vec<ScoredPair> = self
            .copies
            .iter()
            .enumerate()
            .map(|(i, c)| ScoredPair {
                kind: c.kind.name(),
                original: scores[c.original] as f32,
                degraded: scores[n + i] as f32,
            })
            .collect();
        pairwise_accuracy(&pairs)
    }
}

/// Writes the originals (centre-cropped as the encoder sees them) and their copies for every
/// kind and severity into `dir`, with `pairs.csv` and `images.txt`.
pub fn write_held_out_set(
    photos: &[PathBuf],
    transform: &Transform,
    kinds: &[Degradation],
    severities: &[f32],
    seed: u64,
    dir: &Path,
    policy: crate::data::BadImagePolicy,
) -> Result<HeldOutSet, HeldOutError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| HeldOutError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let (loaded, skipped) = crate::data::load_photos(photos, policy).map_err(|e| match e {
        crate::data::DataError::BadSample { what, reason } => HeldOutError::Image {
            path: what.into(),
            reason,
        },
        other => HeldOutError::Image {
            path: dir.to_path_buf(),
            reason: other.to_string(),
        },
    })?;
    let (kept, images): (Vec<usize>, Vec<_>) = loaded.into_iter().unzip();
    let pairs = EvalPairs::new(&images, transform, kinds, severities, seed).map_err(|(i, e)| {
        HeldOutError::Image {
            path: photos[kept[i]].clone(),
            reason: e.to_string(),
        }
    })?;
    let save = |image: &image::RgbImage, name: String| -> Result<PathBuf, HeldOutError> {
        let path = dir.join(name);
        image.save(&path).map_err(|e| HeldOutError::Image {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(path)
    };
    let mut originals = Vec::with_capacity(pairs.originals.len());
    for (i, image) in pairs.originals.iter().enumerate() {
        originals.push(save(image, format!("{i:03}_original.png"))?);
    }
    let per_photo = kinds.len() * severities.len();
    let mut copies = Vec::with_capacity(pairs.copies.len());
    for (j, (i, kind, image)) in pairs.copies.iter().enumerate() {
        let severity = severities[j % severities.len().max(1)];
        debug_assert_eq!(*i, j / per_photo.max(1));
        let name = format!("{i:03}_{}_{severity:.2}.png", kind.name());
        copies.push(CopyFile {
            original: *i,
            kind: *kind,
            severity,
            path: save(image, name)?,
        });
    }
    let set = HeldOutSet {
        originals,
        copies,
        skipped: skipped
            .iter()
            .map(|s| format!("{}: {}", s.what, s.reason))
            .collect(),
    };
    // File names, relative to `dir`: `infer --list` reads a list's relative paths from the
    // list's folder, wherever the run directory is.
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut csv = String::from("original,degraded,kind,severity\n");
    for c in &set.copies {
        csv.push_str(&format!(
            "{},{},{},{}\n",
            name(&set.originals[c.original]),
            name(&c.path),
            c.kind.name(),
            c.severity
        ));
    }
    let list: String = set
        .images()
        .iter()
        .map(|p| format!("{}\n", name(p)))
        .collect();
    for (name, text) in [(PAIRS_CSV, csv), (IMAGE_LIST, list)] {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    Ok(set)
}

/// A comment and a suggestion on one degraded copy, and whether each names its defect.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DescribedCopy {
    pub image: String,
    pub kind: String,
    pub severity: f32,
    pub comment: String,
    pub comment_names_defect: bool,
    pub suggestion: String,
    pub suggestion_names_defect: bool,
}

/// A comment and a suggestion on one held-out original, and the defect each states, if any.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DescribedOriginal {
    pub image: String,
    pub comment: String,
    pub comment_states: Option<String>,
    pub suggestion: String,
    pub suggestion_states: Option<String>,
}

/// What the fine-tuning run reports on its held-out photos.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeldOutReport {
    /// `infer score`'s `score` ranks the original above the copy.
    pub pairwise_accuracy: f64,
    pub per_kind: BTreeMap<String, f64>,
    /// The same with the model before fine-tuning (the pretrained MFAM, untrained
    /// projections, the base LLM).
    pub before_pairwise_accuracy: f64,
    pub before_per_kind: BTreeMap<String, f64>,
    pub pairs: usize,
    /// The pairwise accuracy of each readout of `infer score` (`numeric` counts a pair
    /// without a written number as wrong; the score heads' are absent without heads).
    pub readout_accuracy: BTreeMap<String, f64>,
    /// `score` of the originals: mean and standard deviation across them.
    pub originals_mean_score: f64,
    pub originals_score_spread: f64,
    /// Mean `score` of the originals minus that of the described copies (the strongest
    /// severity).
    pub score_gap: f64,
    /// Share of described copies whose comment / suggestion names the defect.
    pub comments_naming_defect: f64,
    pub suggestions_naming_defect: f64,
    pub described: Vec<DescribedCopy>,
    /// Share of held-out originals whose comment / suggestion states no defect
    /// (`tasks::states_defect`).
    pub originals_comments_without_defect: f64,
    pub originals_suggestions_without_defect: f64,
    pub described_originals: Vec<DescribedOriginal>,
}

/// Scores every file of `set` with `after` and `before`, and has `after` comment on and
/// suggest improvements for the copies of severity `describe_severity`.
pub fn evaluate(
    after: &Runner<'_>,
    before: &Runner<'_>,
    set: &HeldOutSet,
    describe_severity: f32,
) -> Result<HeldOutReport, HeldOutError> {
    let files = set.images();
    let images = after
        .load_images(&files)
        .map_err(|(path, reason)| HeldOutError::Image { path, reason })?;
    let task = |e: TaskError| HeldOutError::Image {
        path: PathBuf::from("(held-out set)"),
        reason: e.to_string(),
    };
    let readout = |scores: &[Score]| -> Vec<f64> {
        scores.iter().map(|s| s.score.unwrap_or(f64::NAN)).collect()
    };
    let after_scores = after.score(&images).map_err(task)?;
    let trained_scores = readout(&after_scores);
    let trained = set
        .accuracy(&trained_scores)
        .unwrap_or_else(PairwiseAccuracy::empty);
    let mut readout_accuracy = BTreeMap::new();
    for (name, values) in readouts(&after_scores) {
        if let Some(a) = set.accuracy(&values) {
            readout_accuracy.insert(name.to_string(), a.pairwise_accuracy);
        }
    }
    let untrained = set
        .accuracy(&readout(&before.score(&images).map_err(task)?))
        .unwrap_or_else(PairwiseAccuracy::empty);
    let n = set.originals.len();
    let chosen: Vec<usize> = set
        .copies
        .iter()
        .enumerate()
        .filter(|(_, c)| (c.severity - describe_severity).abs() < 1e-6)
        .map(|(i, _)| i)
        .collect();
    let chosen_images: Vec<_> = chosen.iter().map(|&i| images[n + i].clone()).collect();
    let comments = after
        .describe(&chosen_images, prompts::COMMENT)
        .map_err(task)?;
    let suggestions = after
        .describe(&chosen_images, prompts::SUGGEST)
        .map_err(task)?;
    let described: Vec<DescribedCopy> = chosen
        .iter()
        .zip(comments.into_iter().zip(suggestions))
        .map(|(&i, (comment, suggestion))| {
            let c = &set.copies[i];
            DescribedCopy {
                image: c.path.display().to_string(),
                kind: c.kind.name().to_string(),
                severity: c.severity,
                comment_names_defect: names_defect(&comment, c.kind),
                suggestion_names_defect: names_defect(&suggestion, c.kind),
                comment,
                suggestion,
            }
        })
        .collect();
    let originals_images = &images[..n.min(images.len())];
    let original_comments = after
        .describe(originals_images, prompts::COMMENT)
        .map_err(task)?;
    let original_suggestions = after
        .describe(originals_images, prompts::SUGGEST)
        .map_err(task)?;
    let stated = |text: &str| states_defect(text).map(|kind| kind.name().to_string());
    let described_originals: Vec<DescribedOriginal> = set
        .originals
        .iter()
        .zip(original_comments.into_iter().zip(original_suggestions))
        .map(|(path, (comment, suggestion))| DescribedOriginal {
            image: path.display().to_string(),
            comment_states: stated(&comment),
            suggestion_states: stated(&suggestion),
            comment,
            suggestion,
        })
        .collect();
    let originals = &trained_scores[..n.min(trained_scores.len())];
    let (originals_mean_score, originals_score_spread) = mean_and_spread(originals);
    let copies: Vec<f64> = chosen
        .iter()
        .filter_map(|&i| trained_scores.get(n + i).copied())
        .collect();
    let (copies_mean, _) = mean_and_spread(&copies);
    Ok(HeldOutReport {
        readout_accuracy,
        originals_mean_score,
        originals_score_spread,
        score_gap: originals_mean_score - copies_mean,
        pairwise_accuracy: trained.pairwise_accuracy,
        per_kind: trained.per_kind,
        before_pairwise_accuracy: untrained.pairwise_accuracy,
        before_per_kind: untrained.per_kind,
        pairs: trained.pairs,
        comments_naming_defect: share(&described, |d| d.comment_names_defect),
        suggestions_naming_defect: share(&described, |d| d.suggestion_names_defect),
        described,
        originals_comments_without_defect: share(&described_originals, |d| {
            d.comment_states.is_none()
        }),
        originals_suggestions_without_defect: share(&described_originals, |d| {
            d.suggestion_states.is_none()
        }),
        described_originals,
    })
}

/// The share of `items` for which `f` holds; 0 for none.
fn share<T>(items: &[T], f: impl Fn(&T) -> bool) -> f64 {
    items.iter().filter(|i| f(i)).count() as f64 / items.len().max(1) as f64
}

/// Mean and (population) standard deviation; NaN for no values.
fn mean_and_spread(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, variance.sqrt())
}

/// How a fine-tuned model's `infer score` ranks originals above degraded copies made on the
/// fly (`EvalPairs`): by the default readout, and by each readout the model has.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FinetunedDegradationReport {
    /// The default readout (`infer.score_readout`).
    #[serde(flatten)]
    pub score: PairwiseAccuracy,
    pub readouts: BTreeMap<String, PairwiseAccuracy>,
    pub kinds: Vec<String>,
    pub severities: Vec<f32>,
}

/// Scores `pairs`' originals and copies with `runner` and ranks each pair by every readout
/// (`numeric` counts a pair without a written number as wrong).
pub fn rank_pairs(
    runner: &Runner<'_>,
    pairs: &EvalPairs,
    kinds: &[Degradation],
    severities: &[f32],
) -> Result<FinetunedDegradationReport, TaskError> {
    let images: Vec<std::sync::Arc<image::RgbImage>> = pairs
        .originals
        .iter()
        .chain(pairs.copies.iter().map(|c| &c.2))
        .map(|i| std::sync::Arc::new(i.clone()))
        .collect();
    let scores = runner.score(&images)?;
    let n = pairs.originals.len();
    let accuracy = |values: &[f64]| {
        let values: Vec<f32> = values.iter().map(|&v| v as f32).collect();
        pairwise_accuracy(&pairs.score(&values[..n], &values[n..]))
            .unwrap_or_else(PairwiseAccuracy::empty)
    };
    let default: Vec<f64> = scores.iter().map(|s| s.score.unwrap_or(f64::NAN)).collect();
    Ok(FinetunedDegradationReport {
        score: accuracy(&default),
        readouts: readouts(&scores)
            .into_iter()
            .map(|(name, values)| (name.to_string(), accuracy(&values)))
            .collect(),
        kinds: kinds.iter().map(|k| k.name().to_string()).collect(),
        severities: severities.to_vec(),
    })
}
