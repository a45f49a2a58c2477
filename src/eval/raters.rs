//! The simulated raters' tastes and what their evaluation reports (`runners::raters` runs
//! it): two raters whose taste is a hidden function of measured attributes, opposite to each
//! other.

use std::sync::Arc;

use image::RgbImage;
use serde::Serialize;

use crate::data::raters::{COLOURFULNESS, EXPOSURE, standardise_columns, taste_features};

pub use crate::data::raters::ratings;

/// One simulated rater's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RaterResult {
    pub rater: &'static str,
    /// The ratings of the rated photos put in the conversation, in its order.
    pub examples: Vec<f64>,
    /// The model's scores of the query photos with this rater's examples in context: the
    /// expected first digit of its answer (`PersonalScore::score_expected`).
    pub scores: Vec<f64>,
    /// SRCC of those scores with this rater's taste, and with the other rater's.
    pub srcc_own: f64,
    pub srcc_other: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RatersReport {
    pub shots: usize,
    pub queries: usize,
    pub raters: Vec<RaterResult>,
    /// Means over the two raters.
    pub mean_srcc_own: f64,
    pub mean_srcc_other: f64,
}

/// The bright-and-colourful taste of each image: standardised exposure plus standardised
/// colourfulness over `images` (`data::raters`); the other rater's taste is its negation.
/// Training's simulated raters draw their tastes from the same features, one or two at a
/// time with random weights, on other photos.
pub fn bright_colourful_taste(images: &[Arc<RgbImage>]) -> Vec<f64> {
    let features: Vec<[f64; 5]> = images.iter().map(|i| taste_features(i)).collect();
    standardise_columns(&features)
        .iter()
        .map(|f| f[EXPOSURE] + f[COLOURFULNESS])
        .collect()
}
