//! Simulated raters for personalized assessment (issue #20, item 3): two raters whose taste is
//! a hidden function of measured attributes, opposite to each other. One likes bright,
//! colourful photos (mean luma plus Hasler & Süsstrunk's colourfulness, each standardised over
//! the photos at hand); the other likes dark, muted ones (the negation). Each rates photos 1 to
//! 5 by the rank of its taste, as FLICKR-AES's raters use five levels; `k` of its rated photos
//! go into the conversation, and the model's scores of other photos are compared with both
//! tastes by Spearman's rank correlation. A model that follows the rater in context correlates
//! with that rater's taste and against the other's.

use std::sync::Arc;

use image::RgbImage;

use super::tasks::{Runner, TaskError};
use crate::eval::raters::{RaterResult, RatersReport, bright_colourful_taste, ratings};
use crate::eval::scores::{MetricError, srcc};

#[derive(Debug, thiserror::Error)]
pub enum RatersError {
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Metric(#[from] MetricError),
    #[error("{0}")]
    TooFew(String),
}

/// `shots` of `rated` (spread evenly over the rater's ranking, so that every level shows)
/// in context, then each of `queries` scored; both raters.
pub fn evaluate_raters(
    runner: &Runner<'_>,
    rated: &[Arc<RgbImage>],
    queries: &[Arc<RgbImage>],
    shots: usize,
) -> Result<RatersReport, RatersError> {
    if shots == 0 || rated.len() < shots {
        return Err(RatersError::TooFew(format!(
            "{} rated photos for {shots} shots",
            rated.len()
        )));
    }
    if queries.len() < 3 {
        return Err(RatersError::TooFew(format!(
            "{} query photos; at least 3 are needed for a rank correlation",
            queries.len()
        )));
    }
    let bright_rated = bright_colourful_taste(rated);
    let bright_queries = bright_colourful_taste(queries);
    let mut raters = Vec::with_capacity(2);
    for (name, sign) in [("bright_colourful", 1.0), ("dark_muted", -1.0)] {
        let taste: Vec<f64> = bright_rated.iter().map(|t| sign * t).collect();
        let own: Vec<f64> = bright_queries.iter().map(|t| sign * t).collect();
        let other: Vec<f64> = own.iter().map(|t| -t).collect();
        let rating = ratings(&taste);
        let mut order: Vec<usize> = (0..rated.len()).collect();
        order.sort_by(|&a, &b| taste[a].total_cmp(&taste[b]));
        // Evenly spaced over the ranking, shown in an order that does not sort them.
        let picked: Vec<usize> = (0..shots)
            .map(|j| order[(j * (rated.len() - 1)) / (shots - 1).max(1)])
            .collect();
        let mut shown: Vec<usize> = picked.iter().step_by(2).copied().collect();
        shown.extend(picked.iter().skip(1).step_by(2).rev());
        let examples: Vec<(Arc<RgbImage>, f64)> = shown
            .iter()
            .map(|&i| (rated[i].clone(), rating[i]))
            .collect();
        let scores: Vec<f64> = runner
            .personalize(&examples, queries)?
            .into_iter()
            // The expected first digit: continuous, so it ranks what a written digit ties.
            .map(|s| s.score_expected)
            .collect();
        raters.push(RaterResult {
            rater: name,
            examples: examples.iter().map(|(_, r)| *r).collect(),
            srcc_own: srcc(&scores, &own)?,
            srcc_other: srcc(&scores, &other)?,
            scores,
        });
    }
    let mean = |f: fn(&RaterResult) -> f64| raters.iter().map(f).sum::<f64>() / 2.0;
    Ok(RatersReport {
        shots,
        queries: queries.len(),
        mean_srcc_own: mean(|r| r.srcc_own),
        mean_srcc_other: mean(|r| r.srcc_other),
        raters,
    })
}
