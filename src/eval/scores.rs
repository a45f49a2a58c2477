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

use serde::Serialize;

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

/// Inputs are checked finite before any sort, so no comparison here meets a NaN.
fn cmp_f64(a: f64, b: f64) -> std::cmp::Ordering {
    a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal)
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Pearson's r of checked input, as `scipy.stats.pearsonr`: two-pass (centred sums), so a
/// large common offset (MOS around 5 with small spread) costs no precision; clipped to
/// [-1, 1] against rounding; NaN when either side is constant.
fn pearson(x: &[f64], y: &[f64]) -> f64 {
    if is_constant(x) || is_constant(y) {
        return f64::NAN;
    }
    let (mx, my) = (mean(x), mean(y));
    let r = centred_r(x, y, mx, my, 1.0, 1.0);
    if r.is_finite() {
        return r;
    }
    // Squares or their product overflowed or underflowed (deviations beyond ~1e77 or below
    // ~1e-77): again with the deviations scaled to at most 1, which the ratio does not see.
    // Only this path pays the extra pass.
    let spread = |xs: &[f64], m: f64| xs.iter().fold(0.0f64, |a, &v| a.max((v - m).abs()));
    centred_r(x, y, mx, my, spread(x, mx), spread(y, my))
}

fn centred_r(x: &[f64], y: &[f64], mx: f64, my: f64, sx: f64, sy: f64) -> f64 {
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (&a, &b) in x.iter().zip(y) {
        let (dx, dy) = ((a - mx) / sx, (b - my) / sy);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    // One square root of the product: a perfectly linear pair gives exactly ±1.
    (sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0)
}

/// Ranks from 1, tied values sharing the mean of the ranks they span (`rankdata`'s
/// "average"). The averages are half-integers, exact in f64.
pub fn average_ranks(xs: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..xs.len()).collect();
    order.sort_by(|&a, &b| cmp_f64(xs[a], xs[b]));
    let mut ranks = vec![0.0; xs.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && xs[order[end]] == xs[order[start]] {
            end += 1;
        }
        // Positions start..end hold ranks start+1..=end.
        let rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

/// Spearman's rank correlation (SRCC), as `scipy.stats.spearmanr`. NaN when either side is
/// constant.
pub fn srcc(pred: &[f64], gt: &[f64]) -> Result<f64, MetricError> {
    check_pair("SRCC", pred, gt, MIN_ITEMS)?;
    Ok(pearson(&average_ranks(pred), &average_ranks(gt)))
}

/// Pearson's linear correlation (PLCC) of the raw scores, as `scipy.stats.pearsonr`. NaN when
/// either side is constant.
pub fn plcc(pred: &[f64], gt: &[f64]) -> Result<f64, MetricError> {
    check_pair("PLCC", pred, gt, MIN_ITEMS)?;
    Ok(pearson(pred, gt))
}

/// Dense ranks from 0 (equal values share one, no gaps): Kendall's tau only compares.
fn dense_ranks(xs: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..xs.len()).collect();
    order.sort_by(|&a, &b| cmp_f64(xs[a], xs[b]));
    let mut ranks = vec![0; xs.len()];
    let mut rank = 0;
    for (k, &i) in order.iter().enumerate() {
        if k > 0 && xs[i] != xs[order[k - 1]] {
            rank += 1;
        }
        ranks[i] = rank;
    }
    ranks
}

/// Pairs within groups of equal ranks: sum of c(c-1)/2 over group sizes c.
fn tied_pairs(ranks: &[usize]) -> u64 {
    let mut counts = vec![0u64; ranks.len()];
    for &r in ranks {
        counts[r] += 1;
    }
    counts.iter().map(|&c| c * c.saturating_sub(1) / 2).sum()
}

/// Pairs i < j with `xs[i] > xs[j]`, by merge sort (`xs` is left sorted).
fn inversions(xs: &mut [usize]) -> u64 {
    let mut buf = xs.to_vec();
    let mut count = 0u64;
    let mut width = 1;
    // Bottom-up merge: no recursion depth to think about for large sets.
    while width < xs.len() {
        let mut lo = 0;
        while lo < xs.len() {
            let mid = (lo + width).min(xs.len());
            let hi = (lo + 2 * width).min(xs.len());
            let (mut i, mut j, mut k) = (lo, mid, lo);
            while i < mid && j < hi {
                // Equal values are not inverted: take the left one first.
                if xs[j] < xs[i] {
                    buf[k] = xs[j];
                    count += (mid - i) as u64;
                    j += 1;
                } else {
                    buf[k] = xs[i];
                    i += 1;
                }
                k += 1;
            }
            buf[k..k + (mid - i)].copy_from_slice(&xs[i..mid]);
            k += mid - i;
            buf[k..k + (hi - j)].copy_from_slice(&xs[j..hi]);
            lo = hi;
        }
        xs.copy_from_slice(&buf);
        width *= 2;
    }
    count
}

/// Kendall's rank correlation (KRCC), tau-b, as `scipy.stats.kendalltau` (Knight's
/// O(n log n) algorithm, the same pair counts and the same closing formula, so the result is
/// scipy's to the last bits). NaN when either side is constant.
pub fn krcc(pred: &[f64], gt: &[f64]) -> Result<f64, MetricError> {
    check_pair("KRCC", pred, gt, MIN_ITEMS)?;
    let n = pred.len();
    let (x, y) = (dense_ranks(pred), dense_ranks(gt));
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_unstable_by_key(|&i| (x[i], y[i]));
    // Pairs tied in both.
    let mut joint = 0u64;
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && (x[order[end]], y[order[end]]) == (x[order[start]], y[order[start]]) {
            end += 1;
        }
        let c = (end - start) as u64;
        joint += c * (c - 1) / 2;
        start = end;
    }
    // Sorted by (x, y), a pair is discordant exactly when its y values are inverted: pairs tied
    // in x have ascending y and so never count.
    let mut ys: Vec<usize> = order.iter().map(|&i| y[i]).collect();
    let discordant = inversions(&mut ys);
    let (xtie, ytie) = (tied_pairs(&x), tied_pairs(&y));
    let total = n as u64 * (n as u64 - 1) / 2;
    if xtie == total || ytie == total {
        return Ok(f64::NAN);
    }
    // total = concordant + discordant + (xtie - joint) + (ytie - joint) + joint.
    let con_minus_dis =
        total as i64 - xtie as i64 - ytie as i64 + joint as i64 - 2 * discordant as i64;
    let tau =
        con_minus_dis as f64 / ((total - xtie) as f64).sqrt() / ((total - ytie) as f64).sqrt();
    Ok(tau.clamp(-1.0, 1.0))
}

/// The VQEG 4-parameter logistic at `x`, `b = [b1, b2, b3, b4]`: from b2 (x → -∞) to b1
/// (x → +∞), centred at b3, with slope scale |b4|.
pub fn logistic4(x: f64, b: &[f64; 4]) -> f64 {
    (b[0] - b[1]) / (1.0 + (-(x - b[2]) / b[3].abs()).exp()) + b[1]
}

/// The starting point of the logistic fit: `[max(gt), min(gt), mean(pred), std(pred) / 4]`
/// (the population std), the curve spanning the MOS range and centred on the predictions.
/// A zero spread (constant predictions) starts the slope at 1, though the correlation is
/// undefined then anyway.
pub fn logistic_init(pred: &[f64], gt: &[f64]) -> [f64; 4] {
    let max = gt.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let min = gt.iter().copied().fold(f64::INFINITY, f64::min);
    let m = mean(pred);
    let var = pred.iter().map(|&p| (p - m) * (p - m)).sum::<f64>() / pred.len() as f64;
    let scale = var.sqrt() / 4.0;
    [max, min, m, if scale > 0.0 { scale } else { 1.0 }]
}

/// The logistic fit's evaluation budget, as the reference fixtures pass to `curve_fit`
/// (`maxfev=10000`): MINPACK's default for four parameters, `200 (n + 1)` = 1000, runs out on
/// nearly linear data, where the logistic's tails wander off slowly before the fit settles.
pub const LOGISTIC_MAXFEV: usize = 10_000;

/// A logistic fit and the PLCC it gives.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogisticFit {
    /// Pearson's r of `logistic4(pred)` and the MOS; NaN when the fit failed or is constant.
    pub plcc: f64,
    /// `[b1, b2, b3, b4]` where the fit stopped (b4's sign is immaterial: only |b4| enters).
    pub params: [f64; 4],
    /// MINPACK's `info`: 1 to 4 converged (as curve_fit accepts), 5 ran out of evaluations,
    /// 6 to 8 tolerances too small to make progress, 0 improper input (fewer items than
    /// parameters).
    pub info: u8,
    /// Model evaluations the fit took (each Jacobian costs four).
    pub nfev: usize,
    /// Why `plcc` is NaN, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// PLCC after the VQEG logistic mapping, fitted as `scipy.optimize.curve_fit(logistic4, pred,
/// gt, p0=logistic_init(pred, gt))` fits it (`lmdif`, ftol = xtol = 1.49012e-8, gtol = 0,
/// maxfev = [`LOGISTIC_MAXFEV`]). A fit that does not converge (where curve_fit would raise)
/// or gives a constant mapping is NaN with a warning, not an error.
pub fn plcc_logistic(pred: &[f64], gt: &[f64]) -> Result<LogisticFit, MetricError> {
    check_pair("PLCC (logistic)", pred, gt, MIN_ITEMS)?;
    let mut params = logistic_init(pred, gt);
    let mut residuals = |b: &[f64], out: &mut [f64]| {
        let b = [b[0], b[1], b[2], b[3]];
        for ((o, &x), &y) in out.iter_mut().zip(pred).zip(gt) {
            // curve_fit's sign: model minus data.
            *o = logistic4(x, &b) - y;
        }
    };
    let outcome = lmdif(
        &mut residuals,
        pred.len(),
        &mut params,
        &LmOptions::curve_fit(LOGISTIC_MAXFEV),
    );
    let mut fit = LogisticFit {
        plcc: f64::NAN,
        params,
        info: outcome.info,
        nfev: outcome.nfev,
        warning: None,
    };
    if outcome.info == 0 {
        fit.warning = Some(format!(
            "{} items cannot fit the logistic's 4 parameters: PLCC (logistic) is NaN",
            pred.len()
        ));
        return Ok(fit);
    }
    if !(1..=4).contains(&outcome.info) || params.iter().any(|b| !b.is_finite()) {
        fit.warning = Some(format!(
            "logistic fit did not converge (MINPACK info {}: {}; {} evaluations, params {:?}): PLCC (logistic) is NaN",
            outcome.info,
            lm_message(outcome.info),
            outcome.nfev,
            params
        ));
        return Ok(fit);
    }
    let mapped: Vec<f64> = pred.iter().map(|&x| logistic4(x, &params)).collect();
    if is_constant(&mapped) || is_constant(gt) {
        fit.warning = Some(format!(
            "the fitted logistic {params:?} maps every prediction to one value, or the MOS is constant: PLCC (logistic) is NaN"
        ));
        return Ok(fit);
    }
    fit.plcc = pearson(&mapped, gt);
    if fit.plcc.is_nan() {
        fit.warning = Some(format!(
            "the fitted logistic {params:?} gives non-finite values: PLCC (logistic) is NaN"
        ));
    }
    Ok(fit)
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

/// The distribution scaled to sum 1, or why it cannot be.
fn normalised(
    which: &'static str,
    index: usize,
    d: &[f64; BINS],
) -> Result<[f64; BINS], MetricError> {
    if let Some(bin) = d.iter().position(|&p| !p.is_finite() || p < 0.0) {
        return Err(MetricError::BadProbability {
            which,
            index,
            bin,
            value: d[bin],
        });
    }
    let sum: f64 = d.iter().sum();
    if sum <= 0.0 {
        return Err(MetricError::ZeroSumDistribution { which, index });
    }
    Ok(d.map(|p| p / sum))
}

/// The mean score of a distribution over the scores 1..=10 (`sum p_k k`), after normalising.
pub fn dist_mean(d: &[f64; BINS]) -> Result<f64, MetricError> {
    let p = normalised("dist", 0, d)?;
    Ok(p.iter().enumerate().map(|(k, &p)| p * (k + 1) as f64).sum())
}

/// [`dist_mean`] of each distribution.
pub fn dist_means(ds: &[[f64; BINS]]) -> Result<Vec<f64>, MetricError> {
    ds.iter()
        .enumerate()
        .map(|(i, d)| {
            let p = normalised("dist", i, d)?;
            Ok(p.iter().enumerate().map(|(k, &p)| p * (k + 1) as f64).sum())
        })
        .collect()
}

/// NIMA's EMD of order `r` between paired distributions, averaged over the pairs: for each,
/// `(mean over the 10 bins of |CDF_pred - CDF_gt|^r)^(1/r)`, each distribution normalised to
/// sum 1 first (the last bin's CDFs are then both 1 and add nothing but the 1/10 weight, as
/// in NIMA).
pub fn emd(pred: &[[f64; BINS]], gt: &[[f64; BINS]], r: u32) -> Result<f64, MetricError> {
    if r == 0 {
        return Err(MetricError::BadOrder(r));
    }
    if pred.len() != gt.len() {
        return Err(MetricError::LengthMismatch {
            pred: pred.len(),
            gt: gt.len(),
        });
    }
    if pred.is_empty() {
        return Err(MetricError::TooFew {
            metric: "EMD",
            n: 0,
            min: 1,
        });
    }
    let mut total = 0.0;
    for (i, (p, q)) in pred.iter().zip(gt).enumerate() {
        let (p, q) = (normalised("pred", i, p)?, normalised("gt", i, q)?);
        let (mut cp, mut cq, mut acc) = (0.0, 0.0, 0.0);
        for k in 0..BINS {
            cp += p[k];
            cq += q[k];
            let d = (cp - cq).abs();
            acc += match r {
                1 => d,
                2 => d * d,
                _ => d.powi(r as i32),
            };
        }
        let m = acc / BINS as f64;
        total += match r {
            1 => m,
            2 => m.sqrt(),
            _ => m.powf(1.0 / r as f64),
        };
    }
    Ok(total / pred.len() as f64)
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

// --- MINPACK lmdif -------------------------------------------------------------------------
//
// A port of MINPACK-1's lmdif, fdjac2, qrfac, lmpar, qrsolv and enorm (Moré, Garbow, Hillstrom,
// Argonne 1980), the code under scipy.optimize.leastsq and curve_fit's default method. The
// structure, constants and operation order are the Fortran's, so that the iterates, and so the
// fitted parameters, are scipy's to rounding rather than merely "a" minimum: a different
// optimiser stops elsewhere within the tolerance, ~1e-6 away. Matrices are column-major with
// `m` rows, as in Fortran.

struct LmOptions {
    ftol: f64,
    xtol: f64,
    gtol: f64,
    maxfev: usize,
    epsfcn: f64,
    factor: f64,
}

impl LmOptions {
    /// `scipy.optimize.leastsq`'s defaults, which curve_fit passes on: tolerances
    /// 1.49012e-8, epsfcn machine epsilon (so the difference step is sqrt(eps) |x|), step bound
    /// factor 100, automatic variable scaling (mode 1).
    fn curve_fit(maxfev: usize) -> Self {
        Self {
            ftol: 1.49012e-8,
            xtol: 1.49012e-8,
            gtol: 0.0,
            maxfev,
            epsfcn: f64::EPSILON,
            factor: 100.0,
        }
    }
}

struct LmOutcome {
    info: u8,
    nfev: usize,
}

fn lm_message(info: u8) -> &'static str {
    match info {
        0 => "improper input: fewer items than parameters",
        1 => "relative reduction of the sum of squares is at most ftol",
        2 => "relative change between iterates is at most xtol",
        3 => "both ftol and xtol conditions hold",
        4 => "the residuals are orthogonal to the Jacobian's columns",
        5 => "the evaluation budget ran out",
        6 => "ftol is too small: no further reduction is possible",
        7 => "xtol is too small: no further improvement of the parameters is possible",
        _ => {
            "gtol is too small: the residuals are orthogonal to the Jacobian's columns to machine precision"
        }
    }
}

/// The Euclidean norm, MINPACK's way: sums of squares split into small, intermediate and
/// large components so that neither underflow nor overflow can spoil it.
fn enorm(x: &[f64]) -> f64 {
    const RDWARF: f64 = 3.834e-20;
    const RGIANT: f64 = 1.304e19;
    let (mut s1, mut s2, mut s3, mut x1max, mut x3max) = (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64);
    let agiant = RGIANT / x.len() as f64;
    for &xi in x {
        let xabs = xi.abs();
        if xabs > RDWARF && xabs < agiant {
            s2 += xabs * xabs;
        } else if xabs > RDWARF {
            if xabs > x1max {
                let q = x1max / xabs;
                s1 = 1.0 + s1 * (q * q);
                x1max = xabs;
            } else {
                let q = xabs / x1max;
                s1 += q * q;
            }
        } else if xabs > x3max {
            let q = x3max / xabs;
            s3 = 1.0 + s3 * (q * q);
            x3max = xabs;
        } else if xabs != 0.0 {
            let q = xabs / x3max;
            s3 += q * q;
        }
    }
    if s1 != 0.0 {
        x1max * (s1 + (s2 / x1max) / x1max).sqrt()
    } else if s2 != 0.0 {
        if s2 >= x3max {
            (s2 * (1.0 + (x3max / s2) * (x3max * s3))).sqrt()
        } else {
            (x3max * ((s2 / x3max) + (x3max * s3))).sqrt()
        }
    } else {
        x3max * s3.sqrt()
    }
}

/// Forward-difference Jacobian into `fjac` (m x n), `fvec` being f(x); `x` is restored.
fn fdjac2(
    fcn: &mut dyn FnMut(&[f64], &mut [f64]),
    m: usize,
    x: &mut [f64],
    fvec: &[f64],
    fjac: &mut [f64],
    epsfcn: f64,
    wa: &mut [f64],
) {
    let eps = epsfcn.max(f64::EPSILON).sqrt();
    for j in 0..x.len() {
        let temp = x[j];
        let mut h = eps * temp.abs();
        if h == 0.0 {
            h = eps;
        }
        x[j] = temp + h;
        fcn(x, wa);
        x[j] = temp;
        for i in 0..m {
            fjac[i + j * m] = (wa[i] - fvec[i]) / h;
        }
    }
}

/// Householder QR with column pivoting of `a` (m x n, m >= n): R's strict upper triangle in
/// `a`, its diagonal in `rdiag`, the Householder vectors below; `acnorm` the original column
/// norms; `ipvt[j]` the original index of column j.
fn qrfac(
    m: usize,
    n: usize,
    a: &mut [f64],
    ipvt: &mut [usize],
    rdiag: &mut [f64],
    acnorm: &mut [f64],
    wa: &mut [f64],
) {
    for j in 0..n {
        acnorm[j] = enorm(&a[j * m..(j + 1) * m]);
        rdiag[j] = acnorm[j];
        wa[j] = rdiag[j];
        ipvt[j] = j;
    }
    for j in 0..m.min(n) {
        let mut kmax = j;
        for k in j..n {
            if rdiag[k] > rdiag[kmax] {
                kmax = k;
            }
        }
        if kmax != j {
            for i in 0..m {
                a.swap(i + j * m, i + kmax * m);
            }
            rdiag[kmax] = rdiag[j];
            wa[kmax] = wa[j];
            ipvt.swap(j, kmax);
        }
        let mut ajnorm = enorm(&a[j + j * m..(j + 1) * m]);
        if ajnorm != 0.0 {
            if a[j + j * m] < 0.0 {
                ajnorm = -ajnorm;
            }
            for i in j..m {
                a[i + j * m] /= ajnorm;
            }
            a[j + j * m] += 1.0;
            for k in j + 1..n {
                let mut sum = 0.0;
                for i in j..m {
                    sum += a[i + j * m] * a[i + k * m];
                }
                let temp = sum / a[j + j * m];
                for i in j..m {
                    a[i + k * m] -= temp * a[i + j * m];
                }
                if rdiag[k] != 0.0 {
                    let temp = a[j + k * m] / rdiag[k];
                    rdiag[k] *= 0.0f64.max(1.0 - temp * temp).sqrt();
                    let q = rdiag[k] / wa[k];
                    // The downdated norm has lost too many digits: recompute it.
                    if 0.05 * (q * q) <= f64::EPSILON {
                        rdiag[k] = enorm(&a[j + 1 + k * m..(k + 1) * m]);
                        wa[k] = rdiag[k];
                    }
                }
            }
        }
        rdiag[j] = -ajnorm;
    }
}

/// Solves `(A; D) x ≈ (b; 0)` in the least-squares sense given A's QR (R upper triangle of
/// `r`, leading dimension `ldr`, pivots `ipvt`) and `qtb` = Qᵀb, for diagonal D = `diag`;
/// leaves S (with Sᵀ S = Pᵀ(AᵀA + DD)P) in `sdiag` and the strict lower triangle of `r`.
#[allow(clippy::too_many_arguments)]
fn qrsolv(
    n: usize,
    r: &mut [f64],
    ldr: usize,
    ipvt: &[usize],
    diag: &[f64],
    qtb: &[f64],
    x: &mut [f64],
    sdiag: &mut [f64],
    wa: &mut [f64],
) {
    for j in 0..n {
        for i in j..n {
            r[i + j * ldr] = r[j + i * ldr];
        }
        x[j] = r[j + j * ldr];
        wa[j] = qtb[j];
    }
    for j in 0..n {
        let l = ipvt[j];
        if diag[l] != 0.0 {
            for s in &mut sdiag[j..n] {
                *s = 0.0;
            }
            sdiag[j] = diag[l];
            let mut qtbpj = 0.0;
            for k in j..n {
                if sdiag[k] == 0.0 {
                    continue;
                }
                let rkk = r[k + k * ldr];
                let (sin, cos) = if rkk.abs() < sdiag[k].abs() {
                    let cotan = rkk / sdiag[k];
                    let sin = 0.5 / (0.25 + 0.25 * (cotan * cotan)).sqrt();
                    (sin, sin * cotan)
                } else {
                    let tan = sdiag[k] / rkk;
                    let cos = 0.5 / (0.25 + 0.25 * (tan * tan)).sqrt();
                    (cos * tan, cos)
                };
                r[k + k * ldr] = cos * rkk + sin * sdiag[k];
                let temp = cos * wa[k] + sin * qtbpj;
                qtbpj = -sin * wa[k] + cos * qtbpj;
                wa[k] = temp;
                for i in k + 1..n {
                    let temp = cos * r[i + k * ldr] + sin * sdiag[i];
                    sdiag[i] = -sin * r[i + k * ldr] + cos * sdiag[i];
                    r[i + k * ldr] = temp;
                }
            }
        }
        sdiag[j] = r[j + j * ldr];
        r[j + j * ldr] = x[j];
    }
    let mut nsing = n;
    for j in 0..n {
        if sdiag[j] == 0.0 && nsing == n {
            nsing = j;
        }
        if nsing < n {
            wa[j] = 0.0;
        }
    }
    for j in (0..nsing).rev() {
        let mut sum = 0.0;
        for i in j + 1..nsing {
            sum += r[i + j * ldr] * wa[i];
        }
        wa[j] = (wa[j] - sum) / sdiag[j];
    }
    for j in 0..n {
        x[ipvt[j]] = wa[j];
    }
}

/// The Levenberg–Marquardt parameter `par` for which the step `x` solving
/// `(A; sqrt(par) D) x ≈ (b; 0)` has `|D x|` within 10% of `delta` (or `par = 0` when the
/// Gauss–Newton step already fits).
#[allow(clippy::too_many_arguments)]
fn lmpar(
    n: usize,
    r: &mut [f64],
    ldr: usize,
    ipvt: &[usize],
    diag: &[f64],
    qtb: &[f64],
    delta: f64,
    par: &mut f64,
    x: &mut [f64],
    sdiag: &mut [f64],
    wa1: &mut [f64],
    wa2: &mut [f64],
) {
    let dwarf = f64::MIN_POSITIVE;
    // The Gauss–Newton direction; a least-squares one when R is singular.
    let mut nsing = n;
    for j in 0..n {
        wa1[j] = qtb[j];
        if r[j + j * ldr] == 0.0 && nsing == n {
            nsing = j;
        }
        if nsing < n {
            wa1[j] = 0.0;
        }
    }
    for j in (0..nsing).rev() {
        wa1[j] /= r[j + j * ldr];
        let temp = wa1[j];
        for i in 0..j {
            wa1[i] -= r[i + j * ldr] * temp;
        }
    }
    for j in 0..n {
        x[ipvt[j]] = wa1[j];
    }
    for j in 0..n {
        wa2[j] = diag[j] * x[j];
    }
    let mut dxnorm = enorm(&wa2[..n]);
    let mut fp = dxnorm - delta;
    if fp <= 0.1 * delta {
        *par = 0.0;
        return;
    }
    // A lower bound for the zero of |D x(par)| - delta, from the Newton step when R has full
    // rank.
    let mut parl = 0.0;
    if nsing >= n {
        for j in 0..n {
            let l = ipvt[j];
            wa1[j] = diag[l] * (wa2[l] / dxnorm);
        }
        for j in 0..n {
            let mut sum = 0.0;
            for i in 0..j {
                sum += r[i + j * ldr] * wa1[i];
            }
            wa1[j] = (wa1[j] - sum) / r[j + j * ldr];
        }
        let temp = enorm(&wa1[..n]);
        parl = ((fp / delta) / temp) / temp;
    }
    // And an upper bound.
    for j in 0..n {
        let mut sum = 0.0;
        for i in 0..=j {
            sum += r[i + j * ldr] * qtb[i];
        }
        wa1[j] = sum / diag[ipvt[j]];
    }
    let gnorm = enorm(&wa1[..n]);
    let mut paru = gnorm / delta;
    if paru == 0.0 {
        paru = dwarf / delta.min(0.1);
    }
    *par = par.max(parl).min(paru);
    if *par == 0.0 {
        *par = gnorm / dxnorm;
    }
    let mut iter = 0;
    loop {
        iter += 1;
        if *par == 0.0 {
            *par = dwarf.max(0.001 * paru);
        }
        let temp = par.sqrt();
        for j in 0..n {
            wa1[j] = temp * diag[j];
        }
        qrsolv(n, r, ldr, ipvt, wa1, qtb, x, sdiag, wa2);
        for j in 0..n {
            wa2[j] = diag[j] * x[j];
        }
        dxnorm = enorm(&wa2[..n]);
        let previous = fp;
        fp = dxnorm - delta;
        if fp.abs() <= 0.1 * delta
            || (parl == 0.0 && fp <= previous && previous < 0.0)
            || iter == 10
        {
            return;
        }
        // Newton's correction.
        for j in 0..n {
            let l = ipvt[j];
            wa1[j] = diag[l] * (wa2[l] / dxnorm);
        }
        for j in 0..n {
            wa1[j] /= sdiag[j];
            let temp = wa1[j];
            for i in j + 1..n {
                wa1[i] -= r[i + j * ldr] * temp;
            }
        }
        let temp = enorm(&wa1[..n]);
        let parc = ((fp / delta) / temp) / temp;
        if fp > 0.0 {
            parl = parl.max(*par);
        }
        if fp < 0.0 {
            paru = paru.min(*par);
        }
        *par = parl.max(*par + parc);
    }
}

/// Minimises the sum of squares of `fcn`'s `m` outputs over `x` (MINPACK's lmdif, mode 1).
fn lmdif(
    fcn: &mut dyn FnMut(&[f64], &mut [f64]),
    m: usize,
    x: &mut [f64],
    opts: &LmOptions,
) -> LmOutcome {
    let n = x.len();
    let epsmch = f64::EPSILON;
    if n == 0 || m < n || opts.maxfev == 0 {
        return LmOutcome { info: 0, nfev: 0 };
    }
    let mut fvec = vec![0.0; m];
    let mut fjac = vec![0.0; m * n];
    let (mut diag, mut qtf, mut ipvt) = (vec![0.0; n], vec![0.0; n], vec![0usize; n]);
    let (mut wa1, mut wa2, mut wa3, mut wa4) =
        (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; m]);
    fcn(x, &mut fvec);
    let mut nfev = 1;
    let mut fnorm = enorm(&fvec);
    let (mut par, mut delta, mut xnorm) = (0.0, 0.0, 0.0);
    let mut iter = 1;
    loop {
        fdjac2(fcn, m, x, &fvec, &mut fjac, opts.epsfcn, &mut wa4);
        nfev += n;
        qrfac(m, n, &mut fjac, &mut ipvt, &mut wa1, &mut wa2, &mut wa3);
        if iter == 1 {
            // Scale each parameter by its Jacobian column's norm, and bound the first step
            // by `factor` times the scaled starting point.
            for j in 0..n {
                diag[j] = if wa2[j] == 0.0 { 1.0 } else { wa2[j] };
                wa3[j] = diag[j] * x[j];
            }
            xnorm = enorm(&wa3);
            delta = opts.factor * xnorm;
            if delta == 0.0 {
                delta = opts.factor;
            }
        }
        // Qᵀ fvec, its first n entries into qtf; R's diagonal back into fjac.
        wa4.copy_from_slice(&fvec);
        for j in 0..n {
            let ajj = fjac[j + j * m];
            if ajj != 0.0 {
                let mut sum = 0.0;
                for i in j..m {
                    sum += fjac[i + j * m] * wa4[i];
                }
                let temp = -sum / ajj;
                for i in j..m {
                    wa4[i] += fjac[i + j * m] * temp;
                }
            }
            fjac[j + j * m] = wa1[j];
            qtf[j] = wa4[j];
        }
        // The scaled gradient's largest cosine with the residuals.
        let mut gnorm: f64 = 0.0;
        if fnorm != 0.0 {
            for j in 0..n {
                let l = ipvt[j];
                if wa2[l] != 0.0 {
                    let mut sum = 0.0;
                    for i in 0..=j {
                        sum += fjac[i + j * m] * (qtf[i] / fnorm);
                    }
                    gnorm = gnorm.max((sum / wa2[l]).abs());
                }
            }
        }
        if gnorm <= opts.gtol {
            return LmOutcome { info: 4, nfev };
        }
        for j in 0..n {
            diag[j] = diag[j].max(wa2[j]);
        }
        loop {
            lmpar(
                n, &mut fjac, m, &ipvt, &diag, &qtf, delta, &mut par, &mut wa1, &mut wa2, &mut wa3,
                &mut wa4,
            );
            for j in 0..n {
                wa1[j] = -wa1[j];
                wa2[j] = x[j] + wa1[j];
                wa3[j] = diag[j] * wa1[j];
            }
            let pnorm = enorm(&wa3);
            if iter == 1 {
                delta = delta.min(pnorm);
            }
            fcn(&wa2, &mut wa4);
            nfev += 1;
            let fnorm1 = enorm(&wa4);
            let actred = if 0.1 * fnorm1 < fnorm {
                let q = fnorm1 / fnorm;
                1.0 - q * q
            } else {
                -1.0
            };
            // The reduction the linear model predicted, and the directional derivative.
            for j in 0..n {
                wa3[j] = 0.0;
                let temp = wa1[ipvt[j]];
                for i in 0..=j {
                    wa3[i] += fjac[i + j * m] * temp;
                }
            }
            let temp1 = enorm(&wa3) / fnorm;
            let temp2 = (par.sqrt() * pnorm) / fnorm;
            let prered = temp1 * temp1 + temp2 * temp2 / 0.5;
            let dirder = -(temp1 * temp1 + temp2 * temp2);
            let ratio = if prered != 0.0 { actred / prered } else { 0.0 };
            if ratio <= 0.25 {
                let mut temp = if actred >= 0.0 {
                    0.5
                } else {
                    0.5 * dirder / (dirder + 0.5 * actred)
                };
                if 0.1 * fnorm1 >= fnorm || temp < 0.1 {
                    temp = 0.1;
                }
                delta = temp * delta.min(pnorm / 0.1);
                par /= temp;
            } else if par == 0.0 || ratio >= 0.75 {
                delta = pnorm / 0.5;
                par *= 0.5;
            }
            if ratio >= 1e-4 {
                for j in 0..n {
                    x[j] = wa2[j];
                    wa2[j] = diag[j] * x[j];
                }
                fvec.copy_from_slice(&wa4);
                xnorm = enorm(&wa2);
                fnorm = fnorm1;
                iter += 1;
            }
            let ftol_met = actred.abs() <= opts.ftol && prered <= opts.ftol && 0.5 * ratio <= 1.0;
            let xtol_met = delta <= opts.xtol * xnorm;
            let info = match (ftol_met, xtol_met) {
                (true, true) => 3,
                (false, true) => 2,
                (true, false) => 1,
                (false, false) => 0,
            };
            if info != 0 {
                return LmOutcome { info, nfev };
            }
            let mut info = 0;
            if nfev >= opts.maxfev {
                info = 5;
            }
            if actred.abs() <= epsmch && prered <= epsmch && 0.5 * ratio <= 1.0 {
                info = 6;
            }
            if delta <= epsmch * xnorm {
                info = 7;
            }
            if gnorm <= epsmch {
                info = 8;
            }
            if info != 0 {
                return LmOutcome { info, nfev };
            }
            if ratio >= 1e-4 {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn monotone_is_perfect_and_reversed_is_minus_one() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [2.0, 4.0, 8.0, 16.0, 32.0];
        let rev: Vec<f64> = y.iter().rev().copied().collect();
        assert_eq!(srcc(&x, &y), Ok(1.0));
        assert_eq!(srcc(&x, &rev), Ok(-1.0));
        // scipy's closing division, 10 / sqrt(10) / sqrt(10), gives 0.9999999999999999 here
        // and so do we.
        assert!(close(krcc(&x, &y).unwrap_or(0.0), 1.0, 1e-15));
        assert!(close(krcc(&x, &rev).unwrap_or(0.0), -1.0, 1e-15));
    }

    #[test]
    fn average_ranks_share_ties() {
        assert_eq!(
            average_ranks(&[3.0, 1.0, 3.0, 2.0, 3.0]),
            vec![4.0, 1.0, 4.0, 2.0, 4.0]
        );
    }

    #[test]
    fn ties_by_hand() {
        // Ranks of x: 1, 2.5, 2.5, 4; centred: -1.5, 0, 0, 1.5 against -1.5, -0.5, 0.5, 1.5,
        // so r = 4.5 / sqrt(4.5 * 5) = sqrt(0.9).
        let (x, y) = ([1.0, 2.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]);
        assert!(close(srcc(&x, &y).unwrap_or(0.0), 0.9f64.sqrt(), 1e-15));
        // 6 pairs, 1 tied in x, none discordant: tau_b = 5 / sqrt(5 * 6).
        assert!(close(
            krcc(&x, &y).unwrap_or(0.0),
            (5.0f64 / 6.0).sqrt(),
            1e-15
        ));
        // Two discordant pairs of ten: (8 - 2) / 10.
        let tau = krcc(&[1.0, 2.0, 3.0, 4.0, 5.0], &[2.0, 1.0, 4.0, 3.0, 5.0]);
        assert!(close(tau.unwrap_or(0.0), 0.6, 1e-15));
        // Ties on both sides, one pair tied in both: x = 1,1,2,2 and y = 1,2,2,3.
        // Pairs: (0,1) x-tie; (0,2),(0,3),(1,3) concordant; (1,2) y-tie; (2,3) x-tie.
        // tau_b = 3 / sqrt((6 - 2)(6 - 1)).
        let tau = krcc(&[1.0, 1.0, 2.0, 2.0], &[1.0, 2.0, 2.0, 3.0]);
        assert!(close(tau.unwrap_or(0.0), 3.0 / 20.0f64.sqrt(), 1e-15));
    }

    #[test]
    fn plcc_by_hand() {
        // Centred: (-1, 0, 1) and (-4/3, -1/3, 5/3): r = 3 / sqrt(2 * 42/9) = 9 / sqrt(84).
        let r = plcc(&[1.0, 2.0, 3.0], &[1.0, 2.0, 4.0]);
        assert!(close(r.unwrap_or(0.0), 9.0 / 84.0f64.sqrt(), 1e-15));
    }

    #[test]
    fn inversions_match_the_quadratic_count() {
        let xs: Vec<usize> = (0..257u64)
            .map(|i| ((i * 7919 + 13) % 31) as usize)
            .collect();
        let mut slow = 0u64;
        for i in 0..xs.len() {
            for j in i + 1..xs.len() {
                slow += u64::from(xs[i] > xs[j]);
            }
        }
        let mut sorted = xs.clone();
        assert_eq!(inversions(&mut sorted), slow);
        assert!(sorted.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn krcc_matches_the_pairwise_definition() {
        let x: Vec<f64> = (0..200u64).map(|i| ((i * 37) % 11) as f64).collect();
        let y: Vec<f64> = (0..200u64)
            .map(|i| ((i * 53 + 7) % 13) as f64 * 0.5)
            .collect();
        let (mut s, mut tx, mut ty) = (0i64, 0i64, 0i64);
        for i in 0..x.len() {
            for j in i + 1..x.len() {
                let (dx, dy) = (x[i] - x[j], y[i] - y[j]);
                s +=
                    (dx.signum() as i64) * (dy.signum() as i64) * i64::from(dx != 0.0 && dy != 0.0);
                tx += i64::from(dx != 0.0);
                ty += i64::from(dy != 0.0);
            }
        }
        let expected = s as f64 / ((tx as f64) * (ty as f64)).sqrt();
        assert!(close(krcc(&x, &y).unwrap_or(0.0), expected, 1e-14));
    }

    #[test]
    fn emd_by_hand() {
        let mut low = [0.0; BINS];
        low[0] = 2.0; // normalised to 1
        let mut high = [0.0; BINS];
        high[9] = 1.0;
        // CDFs differ by 1 in the first nine bins, agree in the last.
        assert!(close(emd(&[low], &[high], 1).unwrap_or(0.0), 0.9, 1e-15));
        assert!(close(
            emd(&[low], &[high], 2).unwrap_or(0.0),
            0.9f64.sqrt(),
            1e-15
        ));
        assert_eq!(emd(&[low, high], &[low, high], 2), Ok(0.0));
        assert_eq!(dist_mean(&high), Ok(10.0));
        // 0.1 is inexact: numpy's sum(p * k) is 5.500000000000001 too.
        assert!(close(dist_mean(&[1.0; BINS]).unwrap_or(0.0), 5.5, 1e-15));
        assert_eq!(emd(&[low], &[high], 0), Err(MetricError::BadOrder(0)));
        assert!(matches!(
            emd(&[[0.0; BINS]], &[high], 1),
            Err(MetricError::ZeroSumDistribution { .. })
        ));
    }

    #[test]
    fn errors_by_hand() {
        let (p, g) = ([4.0, 6.0, 5.0, 7.0], [3.0, 6.0, 5.0, 4.0]);
        assert_eq!(mae(&p, &g), Ok(1.0));
        assert_eq!(rmse(&p, &g), Ok((10.0f64 / 4.0).sqrt()));
        // 4 vs 3 low/low, 6/6 high/high, 5/5 low/low (5 is not above 5), 7/4 high/low.
        assert_eq!(binary_accuracy(&p, &g, 5.0), Ok(0.75));
    }

    #[test]
    fn lmdif_solves_rosenbrock() {
        // Residuals (10 (x2 - x1²), 1 - x1): zero at (1, 1), from MINPACK's start (-1.2, 1).
        let mut f = |x: &[f64], out: &mut [f64]| {
            out[0] = 10.0 * (x[1] - x[0] * x[0]);
            out[1] = 1.0 - x[0];
        };
        let mut x = [-1.2, 1.0];
        let out = lmdif(&mut f, 2, &mut x, &LmOptions::curve_fit(600));
        assert!((1..=4).contains(&out.info), "info {}", out.info);
        assert!(close(x[0], 1.0, 1e-7) && close(x[1], 1.0, 1e-7), "{x:?}");
    }

    #[test]
    fn logistic_fit_recovers_an_exact_curve() {
        let truth = [8.0, 2.0, 5.0, 0.7];
        let pred: Vec<f64> = (0..60).map(|i| 2.0 + 0.1 * i as f64).collect();
        let gt: Vec<f64> = pred.iter().map(|&x| logistic4(x, &truth)).collect();
        let fit = plcc_logistic(&pred, &gt);
        let fit = fit.as_ref().map_err(|e| e.to_string());
        let Ok(fit) = fit else { panic!("{fit:?}") };
        assert!((1..=4).contains(&fit.info), "{fit:?}");
        assert!(close(fit.plcc, 1.0, 1e-12), "{fit:?}");
        let mut b = fit.params;
        b[3] = b[3].abs();
        for (got, want) in b.iter().zip(truth) {
            assert!(close(*got, want, 1e-6), "{fit:?}");
        }
    }
}
