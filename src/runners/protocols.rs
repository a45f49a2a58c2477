//! The evaluation protocols of CALM (AAAI 2025, section 4), as `evaluate task` runs them on a
//! fine-tuned model: aesthetic scoring on AVA's official test list (SRCC, PLCC, accuracy
//! against the vote-weighted mean, Murray et al. 2012), commenting on AVA-Captions' test split
//! (coco-caption metrics against each image's comments, Ghosal et al. 2019), and personalized
//! assessment on FLICKR-AES (Ren et al. 2017): for each test rater, k of the rater's scored
//! photos are given in context and the rater's other photos are scored; SRCC per rater,
//! averaged over raters, then over seeds (the draws of the k examples).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use image::RgbImage;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;

use super::tasks::{Runner, TaskError};
use crate::data::formats::ava::{read_ava_txt, read_id_list};
use crate::data::formats::ava_captions::read_ava_captions;
use crate::data::formats::flickr_aes::read_flickr_aes;
use crate::data::instruct::prompts;
use crate::data::{AvaSource, DataError};
use crate::eval::captions::{CaptionError, CaptionEvaluation, evaluate_captions};
use crate::eval::protocols::{AvaCaptionsProtocol, EvalConfig, FlickrAesProtocol, Protocol};
use crate::eval::scores::{MetricError, ScoreReport, score_report, srcc};
use crate::eval::tasks::ScoreReadout;

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("the config names no `eval.protocol` (see configs/eval/)")]
    NoProtocol,
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Metric(#[from] MetricError),
    #[error(transparent)]
    Caption(#[from] CaptionError),
    #[error("{0}")]
    Nothing(String),
}

/// A test image that could not be read, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    pub image: PathBuf,
    pub reason: String,
}

/// One scored AVA test image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoredImage {
    pub image: String,
    pub score: Option<f64>,
    pub score_numeric: Option<f64>,
    pub score_levels: f64,
    pub score_distribution: Option<f64>,
    pub score_regression: Option<f64>,
    pub mos: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AvaScoringResult {
    /// The metrics of the readout `infer.score_readout` names.
    #[serde(flatten)]
    pub metrics: ScoreReport,
    pub readout: ScoreReadout,
    /// Each readout's; `numeric` over the images whose answer held a number, the score
    /// heads' `null` for a model fine-tuned without them.
    pub levels: ScoreReport,
    pub numeric: Option<ScoreReport>,
    pub distribution: Option<ScoreReport>,
    pub regression: Option<ScoreReport>,
    /// Images whose answer held no number (left out of `numeric`).
    pub unanswered_numeric: usize,
    pub skipped: Vec<Skipped>,
    #[serde(skip)]
    pub predictions: Vec<ScoredImage>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AvaCaptionsResult {
    /// Corpus scores (`bleu1`..`bleu4`, `meteor`, `rouge_l`, `cider`) and each image's.
    #[serde(flatten)]
    pub metrics: CaptionEvaluation,
    pub n: usize,
    pub skipped: Vec<Skipped>,
    /// Image file name -> the model's comment.
    #[serde(skip)]
    pub predictions: BTreeMap<String, String>,
}

/// One query photo's personalized score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PersonalPrediction {
    pub shots: usize,
    pub seed: u64,
    pub worker: String,
    pub image: String,
    pub score: f64,
    pub score_numeric: Option<f64>,
    pub score_expected: f64,
    pub rating: f64,
}

/// Results at one k.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShotsResult {
    pub shots: usize,
    /// Mean over seeds of the mean over raters of each rater's SRCC.
    pub srcc: f64,
    /// Standard deviation of the per-seed means (0 for one seed).
    pub srcc_std: f64,
    /// Per seed: the mean over raters.
    pub srcc_per_seed: Vec<f64>,
    /// Raters evaluated at this k.
    pub raters: usize,
    /// (rater, seed) draws whose SRCC is undefined (constant predictions or ratings), left
    /// out of the means.
    pub undefined: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlickrAesResult {
    pub results: Vec<ShotsResult>,
    /// Raters left out at a k for having fewer than k + `min_queries` readable photos.
    pub too_few: Vec<TooFew>,
    pub skipped: Vec<Skipped>,
    #[serde(skip)]
    pub predictions: Vec<PersonalPrediction>,
}

/// A rater left out at one k.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TooFew {
    pub worker: String,
    pub shots: usize,
    /// Readable rated photos.
    pub photos: usize,
}

/// What one protocol produced.
#[derive(Debug, Clone, PartialEq)]
pub enum ProtocolResult {
    /// Boxed: its five inline score reports make it several times the size of the others.
    AvaScoring(Box<AvaScoringResult>),
    AvaCaptions(AvaCaptionsResult),
    FlickrAes(FlickrAesResult),
}

/// Runs the protocol `config` names with `runner`'s model.
pub fn run_protocol(
    config: &EvalConfig,
    runner: &Runner<'_>,
) -> Result<ProtocolResult, ProtocolError> {
    match config.protocol.as_ref().ok_or(ProtocolError::NoProtocol)? {
        Protocol::AvaScoring(p) => ava_scoring(p, config.max_images, runner)
            .map(|r| ProtocolResult::AvaScoring(Box::new(r))),
        Protocol::AvaCaptions(p) => {
            ava_captions(p, config.max_images, runner).map(ProtocolResult::AvaCaptions)
        }
        Protocol::FlickrAes(p) => {
            flickr_aes(p, config.max_images, runner).map(ProtocolResult::FlickrAes)
        }
    }
}

/// Reads the images that decode; the others are listed with their reason.
fn load_readable(
    runner: &Runner<'_>,
    paths: Vec<PathBuf>,
) -> (Vec<(PathBuf, Arc<RgbImage>)>, Vec<Skipped>) {
    let (read, skipped) = runner.load_readable(&paths);
    let skipped = skipped
        .into_iter()
        .map(|(image, reason)| Skipped { image, reason })
        .collect();
    (read, skipped)
}

fn ava_scoring(
    p: &AvaSource,
    max_images: Option<usize>,
    runner: &Runner<'_>,
) -> Result<AvaScoringResult, ProtocolError> {
    let mut records = read_ava_txt(&p.ava_txt)?;
    if let Some(list) = &p.split_list {
        let ids: std::collections::HashSet<u64> = read_id_list(list)?.into_iter().collect();
        records.retain(|r| ids.contains(&r.image_id));
    }
    // An image nobody voted on has no ground truth.
    let mut test: Vec<(PathBuf, f64)> = records
        .iter()
        .filter_map(|r| Some((r.image_path(&p.images), r.mean_score()?)))
        .collect();
    test.truncate(max_images.unwrap_or(usize::MAX));
    let mos: BTreeMap<PathBuf, f64> = test.iter().cloned().collect();
    let (images, skipped) = load_readable(runner, test.into_iter().map(|(p, _)| p).collect());
    if images.len() < 3 {
        return Err(ProtocolError::Nothing(format!(
            "{} readable AVA test images; at least 3 are needed",
            images.len()
        )));
    }
    let pixels: Vec<Arc<RgbImage>> = images.iter().map(|(_, i)| i.clone()).collect();
    let scores = runner.score(&pixels)?;
    let predictions: Vec<ScoredImage> = images
        .iter()
        .zip(&scores)
        .map(|((path, _), s)| ScoredImage {
            image: path.display().to_string(),
            score: s.score,
            score_numeric: s.score_numeric,
            score_levels: s.score_levels,
            score_distribution: s.score_distribution,
            score_regression: s.score_regression,
            mos: mos.get(path).copied().unwrap_or(f64::NAN),
        })
        .collect();
    let report =
        |pick: &dyn Fn(&ScoredImage) -> Option<f64>| -> Result<Option<ScoreReport>, MetricError> {
            let (pred, gt): (Vec<f64>, Vec<f64>) = predictions
                .iter()
                .filter_map(|s| Some((pick(s)?, s.mos)))
                .unzip();
            if pred.len() < 3 {
                return Ok(None);
            }
            score_report(&pred, &gt, None).map(Some)
        };
    let levels = report(&|s| Some(s.score_levels))?
        .ok_or_else(|| ProtocolError::Nothing("fewer than 3 scored images".into()))?;
    let numeric = report(&|s| s.score_numeric)?;
    let distribution = report(&|s| s.score_distribution)?;
    let regression = report(&|s| s.score_regression)?;
    let readout = runner.config.score_readout;
    let no_heads = || {
        ProtocolError::Nothing(
            "the model was fine-tuned without score heads; try infer.score_readout=levels".into(),
        )
    };
    let metrics = match readout {
        ScoreReadout::Levels => levels.clone(),
        ScoreReadout::Numeric => numeric.clone().ok_or_else(|| {
            ProtocolError::Nothing(
                "fewer than 3 answers held a number; try infer.score_readout=levels".into(),
            )
        })?,
        ScoreReadout::Distribution => distribution.clone().ok_or_else(no_heads)?,
        ScoreReadout::Regression => regression.clone().ok_or_else(no_heads)?,
    };
    Ok(AvaScoringResult {
        metrics,
        readout,
        levels,
        numeric,
        distribution,
        regression,
        unanswered_numeric: predictions
            .iter()
            .filter(|s| s.score_numeric.is_none())
            .count(),
        skipped,
        predictions,
    })
}

fn ava_captions(
    p: &AvaCaptionsProtocol,
    max_images: Option<usize>,
    runner: &Runner<'_>,
) -> Result<AvaCaptionsResult, ProtocolError> {
    let mut test: Vec<_> = read_ava_captions(&p.json)?
        .into_iter()
        .filter(|c| c.split == p.split && !c.captions.is_empty())
        .collect();
    test.truncate(max_images.unwrap_or(usize::MAX));
    let refs_by_path: BTreeMap<PathBuf, (String, Vec<String>)> = test
        .into_iter()
        .map(|c| (p.images.join(&c.filename), (c.filename, c.captions)))
        .collect();
    let (images, skipped) = load_readable(runner, refs_by_path.keys().cloned().collect());
    if images.is_empty() {
        return Err(ProtocolError::Nothing(format!(
            "no readable images of the `{:?}` split in {}",
            p.split,
            p.json.display()
        )));
    }
    let pixels: Vec<Arc<RgbImage>> = images.iter().map(|(_, i)| i.clone()).collect();
    let comments = runner.describe(&pixels, prompts::COMMENT)?;
    let mut predictions = BTreeMap::new();
    let mut refs = BTreeMap::new();
    for ((path, _), comment) in images.iter().zip(comments) {
        if let Some((name, captions)) = refs_by_path.get(path) {
            predictions.insert(name.clone(), comment);
            refs.insert(name.clone(), captions.clone());
        }
    }
    let metrics = evaluate_captions(&predictions, &refs)?;
    Ok(AvaCaptionsResult {
        metrics,
        n: predictions.len(),
        skipped,
        predictions,
    })
}

fn flickr_aes(
    p: &FlickrAesProtocol,
    max_images: Option<usize>,
    runner: &Runner<'_>,
) -> Result<FlickrAesResult, ProtocolError> {
    let mut by_worker: BTreeMap<String, Vec<(PathBuf, f64)>> = BTreeMap::new();
    for r in read_flickr_aes(&p.csv)? {
        if p.workers.as_ref().is_none_or(|w| w.contains(&r.worker)) {
            by_worker
                .entry(r.worker)
                .or_default()
                .push((p.images.join(&r.image), f64::from(r.score)));
        }
    }
    if let Some(wanted) = &p.workers
        && let Some(missing) = wanted.iter().find(|w| !by_worker.contains_key(*w))
    {
        return Err(ProtocolError::Nothing(format!(
            "rater {missing} of eval.protocol.workers has no ratings in {}",
            p.csv.display()
        )));
    }
    // Each rater's photos are read once; an unreadable one is dropped from the rater's set
    // before the draws, so every draw sees the same photos.
    let mut skipped = Vec::new();
    let mut raters: Vec<(String, Vec<RatedPhoto>)> = Vec::new();
    for (worker, rated) in by_worker {
        let ratings: BTreeMap<PathBuf, f64> = rated.iter().cloned().collect();
        let (ok, mut bad) = load_readable(runner, rated.into_iter().map(|(p, _)| p).collect());
        skipped.append(&mut bad);
        let photos = ok
            .into_iter()
            .filter_map(|(path, image)| {
                let score = *ratings.get(&path)?;
                Some(RatedPhoto {
                    path,
                    image,
                    rating: score,
                })
            })
            .collect();
        raters.push((worker, photos));
    }
    let mut results = Vec::new();
    let mut too_few = Vec::new();
    let mut predictions = Vec::new();
    for &k in &p.shots {
        let eligible: Vec<_> = raters
            .iter()
            .filter(|(worker, photos)| {
                let ok = photos.len() >= k + p.min_queries;
                if !ok {
                    too_few.push(TooFew {
                        worker: worker.clone(),
                        shots: k,
                        photos: photos.len(),
                    });
                }
                ok
            })
            .collect();
        if eligible.is_empty() {
            return Err(ProtocolError::Nothing(format!(
                "no rater has {k} + {} readable rated photos",
                p.min_queries
            )));
        }
        let mut per_seed = Vec::with_capacity(p.seeds.len());
        let mut undefined = 0;
        for &seed in &p.seeds {
            let mut per_rater = Vec::new();
            for (worker, photos) in &eligible {
                let mut order: Vec<usize> = (0..photos.len()).collect();
                order.shuffle(&mut StdRng::seed_from_u64(draw_seed(seed, worker)));
                let (examples, queries) = order.split_at(k);
                let queries = &queries[..queries.len().min(max_images.unwrap_or(usize::MAX))];
                let examples: Vec<(Arc<RgbImage>, f64)> = examples
                    .iter()
                    .map(|&i| (photos[i].image.clone(), photos[i].rating))
                    .collect();
                let query_images: Vec<Arc<RgbImage>> =
                    queries.iter().map(|&i| photos[i].image.clone()).collect();
                let scores = runner.personalize(&examples, &query_images)?;
                let mut pred = Vec::with_capacity(queries.len());
                let mut gt = Vec::with_capacity(queries.len());
                for (&i, s) in queries.iter().zip(&scores) {
                    pred.push(s.score_expected);
                    gt.push(photos[i].rating);
                    predictions.push(PersonalPrediction {
                        shots: k,
                        seed,
                        worker: worker.clone(),
                        image: photos[i].path.display().to_string(),
                        score: s.score,
                        score_numeric: s.score_numeric,
                        score_expected: s.score_expected,
                        rating: photos[i].rating,
                    });
                }
                match srcc(&pred, &gt) {
                    Ok(r) if r.is_finite() => per_rater.push(r),
                    _ => undefined += 1,
                }
            }
            per_seed.push(mean(&per_rater));
        }
        let m = mean(&per_seed);
        let std = if per_seed.len() > 1 {
            (per_seed.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (per_seed.len() - 1) as f64)
                .sqrt()
        } else {
            0.0
        };
        results.push(ShotsResult {
            shots: k,
            srcc: m,
            srcc_std: std,
            srcc_per_seed: per_seed,
            raters: eligible.len(),
            undefined,
        });
    }
    Ok(FlickrAesResult {
        results,
        too_few,
        skipped,
        predictions,
    })
}

/// One of a rater's photos, read.
struct RatedPhoto {
    path: PathBuf,
    image: Arc<RgbImage>,
    rating: f64,
}

/// NaN for an empty list: a mean over nothing is undefined, not zero.
fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        f64::NAN
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

/// A rater's draw depends on the seed and the rater only, so adding raters or shots to a
/// config leaves the other draws as they were.
fn draw_seed(seed: u64, worker: &str) -> u64 {
    worker.bytes().fold(seed ^ 0x9e37_79b9_7f4a_7c15, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
