//! Score distributions: their means and NIMA's earth mover's distance (Talebi and Milanfar,
//! "NIMA: Neural Image Assessment", IEEE TIP 2018).

use super::{BINS, MetricError};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::scores::close;

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
}
