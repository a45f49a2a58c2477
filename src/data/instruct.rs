//! Instruction samples for CALM's fine-tuning stage (docs/design.md §2): conversations of
//! user and assistant turns about one or more images, each `<image>` in a user turn standing
//! for one image's visual tokens. Task builders (`data::tasks` from annotated datasets,
//! `data::selfsup_instruct` from unlabeled photos) make them; `data::conversation` turns them
//! into token ids and labels.
//!
//! The score wording is shared by training and inference: numbers with one decimal ("6.5"),
//! and Q-Align's five level words, which split the 1..10 scale into five equal bins.

use std::path::PathBuf;
use std::sync::Arc;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::degrade::Degradation;
use crate::model::chat::Role;
use crate::model::score_head::SCORE_BINS;

/// Where `<image>` goes in a user turn.
pub const IMAGE_PLACEHOLDER: &str = "<image>";

/// Q-Align's level words, worst first.
pub const LEVELS: [&str; 5] = ["bad", "poor", "fair", "good", "excellent"];

/// The task a sample teaches; logged per task, and chosen by the mix ratios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// A score as a number.
    Scoring,
    /// A score as one of the five level words.
    ScoringLevels,
    Commenting,
    Suggesting,
    Personalized,
    Conversation,
}

impl Task {
    pub const ALL: [Self; 6] = [
        Self::Scoring,
        Self::ScoringLevels,
        Self::Commenting,
        Self::Suggesting,
        Self::Personalized,
        Self::Conversation,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Scoring => "scoring",
            Self::ScoringLevels => "scoring_levels",
            Self::Commenting => "commenting",
            Self::Suggesting => "suggesting",
            Self::Personalized => "personalized",
            Self::Conversation => "conversation",
        }
    }
}

/// One image of a sample: a file, or pixels a builder already made (a degraded copy).
#[derive(Debug, Clone)]
pub enum SampleImage {
    Path(PathBuf),
    /// `source` names where it came from, for error messages; `degradation` what was done.
    Pixels {
        image: Arc<RgbImage>,
        source: PathBuf,
        degradation: Option<(Degradation, f32)>,
    },
}

impl SampleImage {
    /// The file the image is, or was made from.
    pub fn source(&self) -> &std::path::Path {
        match self {
            Self::Path(p) => p,
            Self::Pixels { source, .. } => source,
        }
    }
}

/// A conversation about `images`: the user turns hold exactly `images.len()` placeholders in
/// all, the i-th of which is `images[i]`. Turns alternate, starting with the user; a training
/// sample ends with an assistant turn.
#[derive(Debug, Clone)]
pub struct InstructSample {
    pub task: Task,
    pub images: Vec<SampleImage>,
    pub turns: Vec<(Role, String)>,
    /// Further conversations about the same images, each opening as `turns` does up to its
    /// last `<image>`: trained in the same row, each seeing that shared opening and itself
    /// only (`data::conversation::pack_branches`).
    pub branches: Vec<(Task, Vec<(Role, String)>)>,
    /// What the score heads learn from the answer to the first question, when that question
    /// asks for a score (`Task::Scoring` or `Task::ScoringLevels`); `None` elsewhere.
    pub score: Option<ScoreTarget>,
}

/// A score the heads of `model::score_head` learn: the mean opinion score (1..10) and
/// its distribution over `SCORE_BINS` (NIMA's target, Talebi & Milanfar 2018).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreTarget {
    pub mean: f64,
    pub distribution: [f32; SCORE_BINS],
}

impl ScoreTarget {
    /// From raters' votes: `distribution` sums to one over scores 1..=10.
    pub fn from_votes(distribution: [f64; SCORE_BINS]) -> Option<Self> {
        let total: f64 = distribution.iter().sum();
        if !(total > 0.0 && total.is_finite()) || distribution.iter().any(|&p| p < 0.0) {
            return None;
        }
        let mean = distribution
            .iter()
            .enumerate()
            .map(|(k, p)| (k + 1) as f64 * p / total)
            .sum();
        Some(Self {
            mean,
            distribution: distribution.map(|p| (p / total) as f32),
        })
    }

    /// From one score where no votes exist (self-supervised targets): a normal of standard
    /// deviation `spread` around it, discretised to the bins (each bin takes the density's
    /// mass over its unit interval; the tails go to the end bins) so that scores between two
    /// bins are told apart.
    pub fn from_score(mean: f64, spread: f64) -> Self {
        let spread = spread.max(1e-3);
        let cdf = |x: f64| 0.5 * (1.0 + erf((x - mean) / (spread * std::f64::consts::SQRT_2)));
        let mut distribution = [0.0f32; SCORE_BINS];
        for (k, p) in distribution.iter_mut().enumerate() {
            let score = (k + 1) as f64;
            let low = if k == 0 { 0.0 } else { cdf(score - 0.5) };
            let high = if k + 1 == SCORE_BINS {
                1.0
            } else {
                cdf(score + 0.5)
            };
            *p = (high - low) as f32;
        }
        Self { mean, distribution }
    }
}

/// The error function by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7): the
/// targets need three decimals, and the standard library has no `erf`.
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let y = 1.0 - poly * (-x * x).exp();
    if x < 0.0 { -y } else { y }
}

/// Instructions the built-in tasks ask with; inference asks with the same ones.
pub mod prompts {
    // Short on purpose: every token of an instruction is paid for in every training sample.
    pub const SCORE: &str = "<image>\nRate this photo's aesthetics from 1 to 10.";
    pub const SCORE_LEVELS: &str = "<image>\nRate this photo's aesthetics in one word.";
    pub const COMMENT: &str = "<image>\nComment on this photo.";
    pub const SUGGEST: &str = "<image>\nHow could this photo be improved?";
    /// One rated example of a user's in personalized assessment, and the query.
    pub const PERSONAL_EXAMPLE: &str = "<image>\nHow would this user score this photo?";
}

/// "6.5": one decimal, the form every score answer takes.
pub fn format_score(score: f64) -> String {
    format!("{score:.1}")
}

/// Index into `LEVELS` of a score on the 1..10 scale: five equal bins.
pub fn level_of(score: f64) -> usize {
    let t = ((score - 1.0) / 9.0).clamp(0.0, 1.0);
    ((t * 5.0).floor() as usize).min(LEVELS.len() - 1)
}

/// The 1..10 score a level word stands for: 1, 3.25, 5.5, 7.75, 10.
pub fn level_value(level: usize) -> f64 {
    1.0 + 9.0 * level as f64 / (LEVELS.len() - 1) as f64
}

/// The expected 1..10 score under `probabilities` over `LEVELS` (Q-Align's readout).
pub fn expected_level_score(probabilities: &[f64; 5]) -> f64 {
    let total: f64 = probabilities.iter().sum();
    probabilities
        .iter()
        .enumerate()
        .map(|(i, p)| p * level_value(i))
        .sum::<f64>()
        / total.max(f64::MIN_POSITIVE)
}

/// The number an answer starts with ("6.5", "Score: 7" -> 7), if any.
pub fn parse_score(answer: &str) -> Option<f64> {
    let start = answer.find(|c: char| c.is_ascii_digit())?;
    let rest = &answer[start..];
    let end = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (c == '.' && i > 0)))
        .map_or(rest.len(), |(i, _)| i);
    rest[..end].trim_end_matches('.').parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_split_the_scale_evenly() {
        assert_eq!(level_of(1.0), 0);
        assert_eq!(level_of(2.79), 0);
        assert_eq!(level_of(2.81), 1);
        assert_eq!(level_of(5.5), 2);
        assert_eq!(level_of(9.99), 4);
        assert_eq!(level_of(10.0), 4);
        assert_eq!(level_value(0), 1.0);
        assert_eq!(level_value(4), 10.0);
        assert_eq!(expected_level_score(&[0.0, 0.0, 1.0, 0.0, 0.0]), 5.5);
        assert!((expected_level_score(&[0.5, 0.0, 0.0, 0.0, 0.5]) - 5.5).abs() < 1e-12);
    }

    #[test]
    fn scores_parse_from_answers() {
        assert_eq!(parse_score("6.5"), Some(6.5));
        assert_eq!(parse_score("6.5."), Some(6.5));
        assert_eq!(parse_score("Score: 7"), Some(7.0));
        assert_eq!(parse_score("about 10/10"), Some(10.0));
        assert_eq!(parse_score("no idea"), None);
        assert_eq!(format_score(6.449), "6.4");
    }
}
