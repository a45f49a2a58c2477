//! Simulated raters (issue #20, item 3), the personalized task of the built-in data. A rater's
//! taste is a hidden linear function of measured attributes of a photo (`TASTE_NAMES`,
//! standardised over the photos at hand); it rates photos 1 to 5 by the rank of its taste, as
//! FLICKR-AES's raters use five levels. In training, each conversation draws a new rater (one
//! or two attributes, each with a sign and a weight), shows `shots` of the training photos with
//! that rater's ratings (2 to `max_shots` of them) and asks for the rating of one more: a model can only answer by
//! reading the taste off the examples, as CALM's personalized assessment asks. Evaluation
//! (`runners::raters`) uses two fixed tastes, with training photos as the rated examples and
//! photos no conversation showed as the queries.

use std::path::PathBuf;

use image::RgbImage;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::DataError;
use super::attributes::low_attributes;
use super::image::load_rgb;
use super::instruct::{InstructSample, SampleImage, Task, format_score, prompts};
use super::loader::BadImagePolicy;
use super::tasks::TaskBuilder;
use crate::model::chat::Role;
use crate::streams::Stream;

/// The measures a taste may weigh: what a photo looks like at a glance.
pub const TASTE_NAMES: [&str; 5] = [
    "exposure",
    "contrast",
    "saturation",
    "colourfulness",
    "colour_temperature",
];
/// Positions in `TASTE_NAMES` of the two features evaluation's raters weigh.
pub const EXPOSURE: usize = 0;
pub const COLOURFULNESS: usize = 3;

/// A photo's taste features, in the order of `TASTE_NAMES`, unstandardised.
pub fn taste_features(image: &RgbImage) -> [f64; 5] {
    let a = low_attributes(image);
    [
        a.exposure,
        a.contrast,
        a.saturation,
        a.colourfulness,
        a.colour_temperature,
    ]
    .map(f64::from)
}

/// Each column of `rows` standardised to mean 0 and standard deviation 1 over the rows'
/// finite values; a non-finite value becomes 0 (the mean) rather than spoiling its column.
pub fn standardise_columns(rows: &[[f64; 5]]) -> Vec<[f64; 5]> {
    let mut out = rows.to_vec();
    for c in 0..5 {
        let finite: Vec<f64> = rows
            .iter()
            .map(|r| r[c])
            .filter(|v| v.is_finite())
            .collect();
        let n = finite.len().max(1) as f64;
        let mean = finite.iter().sum::<f64>() / n;
        let sd = (finite.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        for r in &mut out {
            r[c] = if r[c].is_finite() {
                (r[c] - mean) / sd.max(1e-9)
            } else {
                0.0
            };
        }
    }
    out
}

/// Ratings 1..=5 by the rank of `taste`: five equal shares of the photos, best last.
pub fn ratings(taste: &[f64]) -> Vec<f64> {
    let n = taste.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| taste[a].total_cmp(&taste[b]));
    let mut out = vec![0.0; n];
    for (rank, &i) in order.iter().enumerate() {
        out[i] = 1.0 + ((5 * rank) / n.max(1)) as f64;
    }
    out
}

/// The turns of a personalized conversation, one question and its rating per image, as both
/// training (`flickr_aes`, `simulated_raters`) and `runners::tasks::Runner::personalize` write
/// them; the query is the last image (evaluation leaves its answer out).
pub fn rated_turns(ratings: impl IntoIterator<Item = f64>) -> Vec<(Role, String)> {
    ratings
        .into_iter()
        .flat_map(|r| {
            [
                (Role::User, prompts::PERSONAL_EXAMPLE.to_string()),
                (Role::Assistant, rating_text(r)),
            ]
        })
        .collect()
}

/// A rating as the personalized conversations write it: "4" for whole numbers.
fn rating_text(score: f64) -> String {
    if score.fract() == 0.0 {
        format!("{score:.0}")
    } else {
        format_score(score)
    }
}

/// The `simulated_raters` entry of a stage's mix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimulatedRatersConfig {
    /// Rated examples before each query, drawn from 2 to this many (1..=12; fewer when the
    /// photos are too few); evaluation (`evaluate raters --shots`) shows 6.
    pub max_shots: usize,
    /// A drawn taste weighs at most this many of `TASTE_NAMES` (at least one).
    pub max_attributes: usize,
}

impl Default for SimulatedRatersConfig {
    fn default() -> Self {
        Self {
            max_shots: 6,
            max_attributes: 2,
        }
    }
}

/// Conversations of simulated raters over `photos` (the training photos). The photos'
/// features are measured once, when the task is built; a photo that cannot be read then is
/// left out and named in `skipped` (or stops the run, with `BadImagePolicy::Fail`).
pub struct SimulatedRaters {
    config: SimulatedRatersConfig,
    photos: Vec<PathBuf>,
    /// Standardised over `photos`.
    features: Vec<[f64; 5]>,
    pub skipped: Vec<String>,
}

impl SimulatedRaters {
    pub fn new(
        config: SimulatedRatersConfig,
        paths: &[PathBuf],
        policy: BadImagePolicy,
    ) -> Result<Self, DataError> {
        let mut photos = Vec::with_capacity(paths.len());
        let mut raw = Vec::with_capacity(paths.len());
        let mut skipped = Vec::new();
        for path in paths {
            match load_rgb(path) {
                Ok(image) => {
                    raw.push(taste_features(&image));
                    photos.push(path.clone());
                }
                Err(e) => match policy {
                    BadImagePolicy::Skip => skipped.push(format!("{}: {e}", path.display())),
                    BadImagePolicy::Fail => {
                        return Err(DataError::BadSample {
                            what: path.display().to_string(),
                            reason: e.to_string(),
                        });
                    }
                },
            }
        }
        // Ratings are ranks among the photos, so a conversation shows fewer than all of them:
        // the query's rating must not follow from the ones shown.
        if photos.len() < 3 {
            return Err(DataError::BadSample {
                what: "simulated raters".into(),
                reason: format!(
                    "{} readable training photos; a rated example and a query need at least 3",
                    photos.len()
                ),
            });
        }
        Ok(Self {
            features: standardise_columns(&raw),
            config,
            photos,
            skipped,
        })
    }

    /// The taste of a rater drawn from `rng`: one to `max_attributes` distinct features, each
    /// with a random sign and a weight in [0.5, 1].
    fn draw_taste(&self, rng: &mut StdRng) -> [f64; 5] {
        let count = rng.random_range(1..=self.config.max_attributes.clamp(1, 5));
        let mut features: Vec<usize> = (0..5).collect();
        features.shuffle(rng);
        let mut weights = [0.0; 5];
        for &f in &features[..count] {
            let sign = *[-1.0, 1.0].choose(rng).unwrap_or(&1.0);
            weights[f] = sign * rng.random_range(0.5..=1.0);
        }
        weights
    }
}

impl TaskBuilder for SimulatedRaters {
    fn name(&self) -> &str {
        "simulated_raters"
    }

    fn len(&self) -> usize {
        self.photos.len()
    }

    /// A new rater each sample; the query is photo `index`, the shots other photos.
    fn sample(&self, index: usize, seed: u64) -> Result<InstructSample, DataError> {
        let n = self.photos.len();
        let query = index % n;
        let mut rng = StdRng::seed_from_u64(Stream::SimulatedRater.seed(seed, index as u64));
        let weights = self.draw_taste(&mut rng);
        let taste: Vec<f64> = self
            .features
            .iter()
            .map(|f| f.iter().zip(&weights).map(|(x, w)| x * w).sum())
            .collect();
        let rating = ratings(&taste);
        let mut others: Vec<usize> = (0..n).filter(|&i| i != query).collect();
        others.shuffle(&mut rng);
        let most = self.config.max_shots.clamp(1, n - 2);
        let shots = rng.random_range(2.min(most)..=most);
        others.truncate(shots);
        others.push(query);
        Ok(InstructSample {
            task: Task::Personalized,
            images: others
                .iter()
                .map(|&i| SampleImage::Path(self.photos[i].clone()))
                .collect(),
            turns: rated_turns(others.iter().map(|&i| rating[i])),
            branches: Vec::new(),
            score: None,
        })
    }
}
