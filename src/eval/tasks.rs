//! What the task runners (`runners::tasks`) are configured with and what they return, and the
//! pure readings of their answers: each score readout, and which defect a comment names.

use serde::{Deserialize, Serialize};

use crate::config::Invalid;
use crate::data::degrade::Degradation;
use crate::model::generate::GenerationConfig;

/// Which number `infer score` reports as `score`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreReadout {
    /// The number the model writes.
    Numeric,
    /// The expectation over the five level words, mapped to 1..10 (Q-Align).
    Levels,
    /// The expectation of the score head's 10-bin distribution (NIMA).
    Distribution,
    /// The score head's regression (ROC4MLLM).
    Regression,
}

/// The `infer:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InferConfig {
    pub score_readout: ScoreReadout,
    /// Images per forward pass.
    pub batch_size: usize,
    /// Decoding of comments and suggestions.
    pub generation: GenerationConfig,
    /// Tokens a numeric answer may take ("10.0" is 4 tokens where digits are split).
    pub score_max_new_tokens: usize,
}

impl Default for InferConfig {
    fn default() -> Self {
        Self {
            // The level readout is continuous, so it ranks photos a numeric answer would tie.
            score_readout: ScoreReadout::Levels,
            batch_size: 8,
            generation: GenerationConfig {
                max_new_tokens: 48,
                repetition_penalty: 1.1,
                ..GenerationConfig::default()
            },
            score_max_new_tokens: 5,
        }
    }
}

impl InferConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        crate::model::size_within(
            "infer.batch_size",
            self.batch_size,
            crate::data::loader::MAX_BATCH_SIZE,
        )?;
        if !(1..=crate::model::generate::MAX_NEW_TOKENS).contains(&self.score_max_new_tokens) {
            return Err(Invalid::new(
                "infer.score_max_new_tokens",
                format!(
                    "{} is outside 1..={}",
                    self.score_max_new_tokens,
                    crate::model::generate::MAX_NEW_TOKENS
                ),
            ));
        }
        self.generation.validate("infer.generation")
    }
}

/// One image's score by each readout; `score` is the configured one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    pub score: Option<f64>,
    pub score_numeric: Option<f64>,
    pub score_levels: f64,
    /// The five level words' probabilities, worst first.
    pub level_probabilities: [f64; 5],
    /// The score heads' readouts; `None` for a model fine-tuned without them.
    pub score_distribution: Option<f64>,
    pub score_regression: Option<f64>,
}

/// Each readout's values over `scores`, by name: `levels`, `numeric`, and the score heads'
/// `distribution` and `regression` where the model has them. NaN where a readout gave no value
/// (an answer without a number), so that a pair it cannot rank counts as wrong.
pub fn readouts(scores: &[Score]) -> Vec<(&'static str, Vec<f64>)> {
    type Pick = fn(&Score) -> Option<f64>;
    let all: [(&str, Pick); 4] = [
        ("levels", |s| Some(s.score_levels)),
        ("numeric", |s| s.score_numeric),
        ("distribution", |s| s.score_distribution),
        ("regression", |s| s.score_regression),
    ];
    let heads = scores.iter().any(|s| s.score_distribution.is_some());
    all.into_iter()
        .filter(|(name, _)| heads || !matches!(*name, "distribution" | "regression"))
        .map(|(name, pick)| {
            let values = scores.iter().map(|s| pick(s).unwrap_or(f64::NAN)).collect();
            (name, values)
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PersonalScore {
    /// The written number, else the expectation.
    pub score: f64,
    pub score_numeric: Option<f64>,
    /// The expected first digit of the answer, over 1..9.
    pub score_expected: f64,
}

/// Words that name each degradation's defect, to count how often a comment or suggestion
/// about a degraded copy names what was done to it.
pub fn defect_words(kind: Degradation) -> &'static [&'static str] {
    match kind {
        Degradation::Blur => &["blur", "focus", "soft", "sharp"],
        Degradation::Noise => &["noise", "noisy", "grain", "iso"],
        Degradation::Jpeg => &["compress", "artefact", "artifact", "blocky", "jpeg"],
        Degradation::Overexposure => &["overexposed", "too bright", "highlight", "blown"],
        Degradation::Underexposure => &["dark", "underexposed", "shadow"],
        Degradation::Desaturation => &["colour", "color", "saturat", "washed", "faded", "dull"],
        Degradation::Tilt => &["tilt", "level", "horizon", "rotate"],
        Degradation::BadCrop => &["crop", "frame", "cut"],
        // Kinds kept for evaluation: the words of the training defects they resemble count, as
        // a model can only have learnt those.
        Degradation::Brighter => &["overexposed", "too bright", "highlight", "blown"],
        Degradation::LowContrast => &["contrast", "flat", "washed", "faded", "dull", "hazy"],
        Degradation::GaussianBlur => &["blur", "focus", "soft", "sharp"],
        Degradation::ColourCast => &["colour", "color", "cast", "tint", "white balance"],
        Degradation::Vignette => &["vignett", "corner", "dark", "edge"],
        Degradation::Rotation => &["tilt", "level", "horizon", "rotate", "crooked", "straight"],
    }
}

/// The first training defect that `text` states in one of the wordings fine-tuning teaches
/// for it ("is blurred", "is too dark", ...), if any: what a comment on a good photo must not
/// say. Wordings, not `defect_words`: those words also serve praise ("has sharp detail",
/// "vivid colours").
pub fn states_defect(text: &str) -> Option<Degradation> {
    let lower = text.to_lowercase();
    Degradation::ALL.into_iter().find(|&kind| {
        crate::data::cues::degradation_phrase(kind)
            .iter()
            .any(|phrase| lower.contains(&phrase.to_lowercase()))
    })
}

/// Whether `text` names `kind`'s defect.
pub fn names_defect(text: &str, kind: Degradation) -> bool {
    let lower = text.to_lowercase();
    defect_words(kind).iter().any(|w| lower.contains(w))
}
