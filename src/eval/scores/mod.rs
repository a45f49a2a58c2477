//! Score metrics over a whole evaluation set, as pure functions: a model's predicted scores
//! against the ground-truth mean opinion scores (MOS).
//!
//! They follow the references the literature's numbers were computed with, so that ours can be
//! compared with theirs:
//!
//! - SRCC, PLCC and KRCC follow `scipy.stats`: `spearmanr` (Pearson's r of the ranks,
//!   ties given their average rank as `scipy.stats.rankdata(method="average")`), `pearsonr`
//!   and `kendalltau` (variant `"b"`, ties counted as scipy counts them). Constant input makes
//!   a correlation undefined: NaN, as scipy, and [`score_report`] says so in its warnings.
//! - PLCC after a fitted mapping follows VQEG, "Final report from the Video Quality Experts
//!   Group on the validation of objective models of video quality assessment" (Phase I, 2000):
//!   the 4-parameter logistic `f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2`, fitted
//!   by least squares from the predictions to the MOS, then Pearson's r of `f(pred)` and the
//!   MOS. The fit is `scipy.optimize.curve_fit`'s default: MINPACK's `lmdif`
//!   (Levenberg–Marquardt with a forward-difference Jacobian; Moré, "The Levenberg-Marquardt
//!   algorithm: implementation and theory", 1978), ported here step for step with curve_fit's
//!   tolerances, so that the fit takes scipy's path: where the minimum is well defined the
//!   PLCC agrees to ~1e-13; where the least-squares valley is nearly flat (b1 or b2 running
//!   off far beyond the MOS range) the last bit of an exp moves the stopping point (in scipy
//!   too, given another exp), and only the fit's quality (its SSE, its PLCC to ~1e-6) is
//!   reproducible.
//! - EMD follows NIMA (Talebi and Milanfar, "NIMA: Neural Image Assessment", IEEE TIP 2018):
//!   `(mean over the N = 10 bins of |CDF_p(k) - CDF_q(k)|^r)^(1/r)`, each distribution first
//!   normalised to sum 1, averaged over the images.
//! - Binary accuracy is AVA's (Murray et al., CVPR 2012): an image is "high quality" when its
//!   MOS is above 5.0 (strictly); the accuracy is the share of images whose predicted class is
//!   the ground truth's.
//!
//! Every metric is computed over the whole set at once: rank and logistic-fitted correlations
//! of a set are not the mean of its batches' correlations.
//!
//! Nothing here panics on bad input: mismatched lengths, fewer than [`MIN_ITEMS`] items,
//! non-finite values and empty distributions are a [`MetricError`]; a correlation that is
//! undefined (constant predictions or MOS) or a logistic fit that does not converge is NaN with
//! a warning.

mod correlation;
mod distribution;
mod logistic;
mod minpack;

use serde::Serialize;

pub use correlation::{average_ranks, krcc, plcc, srcc};
pub use distribution::{dist_mean, dist_means, emd};
pub use logistic::{LOGISTIC_MAXFEV, LogisticFit, logistic_init, logistic4, plcc_logistic};

/// The fewest items a correlation is computed on: with two items every correlation is ±1,
/// which says nothing about a model.
pub const MIN_ITEMS: usize = 3;

/// AVA's binary split: an image is "high quality" when its MOS is above this.
pub const AVA_THRESHOLD: f64 = 5.0;

/// The bins of an AVA-style score distribution (scores 1..=10).
pub const BINS: usize = 10;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    #[error("{pred} predictions but {gt} ground-truth scores: they must pair up one to one")]
    LengthMismatch { pred: usize, gt: usize },
    #[error("{n} items: {metric} needs at least {min}")]
    TooFew {
        metric: &'static str,
        n: usize,
        min: usize,
    },
    #[error("{which}[{index}] is {value}: scores must be finite")]
    NonFinite {
        which: &'static str,
        index: usize,
        value: f64,
    },
    #[error("{which}[{index}] bin {bin} is {value}: probabilities must be finite and non-negative")]
    BadProbability {
        which: &'static str,
        index: usize,
        bin: usize,
        value: f64,
    },
    #[error("{which}[{index}] sums to 0: an empty distribution has no CDF or mean")]
    ZeroSumDistribution { which: &'static str, index: usize },
    #[error("EMD order r = {0}: it must be at least 1")]
    BadOrder(u32),
}

fn check_finite(which: &'static str, xs: &[f64]) -> Result<(), MetricError> {
    match xs.iter().position(|x| !x.is_finite()) {
        Some(index) => Err(MetricError::NonFinite {
            which,
            index,
            value: xs[index],
        }),
        None => Ok(()),
    }
}

/// Same length, at least `min` items, all finite.
fn check_pair(
    metric: &'static str,
    pred: &[f64],
    gt: &[f64],
    min: usize,
) -> Result<(), MetricError> {
    if pred.len() != gt.len() {
        return Err(MetricError::LengthMismatch {
            pred: pred.len(),
            gt: gt.len(),
        });
    }
    if pred.len() < min {
        return Err(MetricError::TooFew {
            metric,
            n: pred.len(),
            min,
        });
    }
    check_finite("pred", pred)?;
    check_finite("gt", gt)
}

/// Whether every value equals the first: scipy's test for an undefined correlation (exact
/// equality, so a nearly constant input still gets a number, as in scipy).
fn is_constant(xs: &[f64]) -> bool {
    xs.iter().all(|&x| xs.first().is_some_and(|&f| x == f))
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Share of items on the same side of `threshold` in both: "high" means strictly above (AVA's
/// MOS > 5), so a score exactly at the threshold is "low".
pub fn binary_accuracy(pred: &[f64], gt: &[f64], threshold: f64) -> Result<f64, MetricError> {
    check_pair("binary accuracy", pred, gt, 1)?;
    let right = pred
        .iter()
        .zip(gt)
        .filter(|&(&p, &g)| (p > threshold) == (g > threshold))
        .count();
    Ok(right as f64 / pred.len() as f64)
}

/// Mean absolute error.
pub fn mae(pred: &[f64], gt: &[f64]) -> Result<f64, MetricError> {
    check_pair("MAE", pred, gt, 1)?;
    Ok(pred.iter().zip(gt).map(|(p, g)| (p - g).abs()).sum::<f64>() / pred.len() as f64)
}

/// Root mean squared error.
pub fn rmse(pred: &[f64], gt: &[f64]) -> Result<f64, MetricError> {
    check_pair("RMSE", pred, gt, 1)?;
    let mse = pred
        .iter()
        .zip(gt)
        .map(|(p, g)| (p - g) * (p - g))
        .sum::<f64>()
        / pred.len() as f64;
    Ok(mse.sqrt())
}

/// The whole set's score metrics, as `evaluate` writes them. NaN values serialise as `null`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreReport {
    pub srcc: f64,
    pub plcc: f64,
    pub plcc_logistic: f64,
    pub krcc: f64,
    /// Binary accuracy at [`AVA_THRESHOLD`].
    pub acc: f64,
    /// Only when distributions were given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emd1: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emd2: Option<f64>,
    pub mae: f64,
    pub rmse: f64,
    pub n: usize,
    /// The fitted logistic, for whoever wants to plot it; not part of the written report.
    #[serde(skip)]
    pub logistic_params: [f64; 4],
    /// Why some values are NaN; for the caller to print.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Predicted and ground-truth score distributions, one of each per item.
pub type Distributions<'a> = (&'a [[f64; BINS]], &'a [[f64; BINS]]);

/// Every metric over the whole set. `dists` are the predicted and ground-truth score
/// distributions, one pair per item (their count must be `pred.len()`), for the EMDs.
pub fn score_report(
    pred: &[f64],
    gt: &[f64],
    dists: Option<Distributions<'_>>,
) -> Result<ScoreReport, MetricError> {
    check_pair("the score report", pred, gt, MIN_ITEMS)?;
    let mut warnings = Vec::new();
    for (side, xs) in [("predictions", pred), ("ground-truth scores", gt)] {
        if is_constant(xs) {
            warnings.push(format!(
                "all {} {side} are equal ({}): SRCC, PLCC, PLCC (logistic) and KRCC are undefined (NaN)",
                xs.len(),
                xs[0]
            ));
        }
    }
    let fit = plcc_logistic(pred, gt)?;
    // Constant input already has its warning; the fit's would repeat it.
    if warnings.is_empty()
        && let Some(w) = &fit.warning
    {
        warnings.push(w.clone());
    }
    let (emd1, emd2) = match dists {
        Some((p, g)) => {
            if p.len() != pred.len() {
                return Err(MetricError::LengthMismatch {
                    pred: p.len(),
                    gt: pred.len(),
                });
            }
            (Some(emd(p, g, 1)?), Some(emd(p, g, 2)?))
        }
        None => (None, None),
    };
    Ok(ScoreReport {
        srcc: srcc(pred, gt)?,
        plcc: plcc(pred, gt)?,
        plcc_logistic: fit.plcc,
        krcc: krcc(pred, gt)?,
        acc: binary_accuracy(pred, gt, AVA_THRESHOLD)?,
        emd1,
        emd2,
        mae: mae(pred, gt)?,
        rmse: rmse(pred, gt)?,
        n: pred.len(),
        logistic_params: fit.params,
        warnings,
    })
}

/// Equal to within `tol`: the tests of every score metric compare with figures worked by hand
/// or by scipy.
#[cfg(test)]
fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_by_hand() {
        let (p, g) = ([4.0, 6.0, 5.0, 7.0], [3.0, 6.0, 5.0, 4.0]);
        assert_eq!(mae(&p, &g), Ok(1.0));
        assert_eq!(rmse(&p, &g), Ok((10.0f64 / 4.0).sqrt()));
        // 4 vs 3 low/low, 6/6 high/high, 5/5 low/low (5 is not above 5), 7/4 high/low.
        assert_eq!(binary_accuracy(&p, &g, 5.0), Ok(0.75));
    }
}
