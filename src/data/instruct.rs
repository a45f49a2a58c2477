//! Instruction samples for CALM's fine-tuning stage (DESIGN.md section 2): conversations of
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
