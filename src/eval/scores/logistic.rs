//! PLCC after the 4-parameter logistic mapping of VQEG, "Final report from the Video Quality
//! Experts Group on the validation of objective models of video quality assessment" (Phase I,
//! 2000), fitted as `scipy.optimize.curve_fit` fits it ([`super::minpack`]).

use serde::Serialize;

use super::correlation::pearson;
use super::minpack::{LmOptions, lm_message, lmdif};
use super::{MIN_ITEMS, MetricError, check_pair, is_constant, mean};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::scores::close;

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
